"""Settings for the training tests, for this package only and restored afterwards.

* XLA optimisations off: the tests compile many small programs (as the Flax ImageNet example's
  tests do).
* float32 matmuls and convs at full precision: on a GPU the default (TF32) would make, e.g., a
  vmapped population differ from single runs by more than float32 rounding.

Subprocesses get the same settings through the environment (``tiny.subprocess_env``).
"""

import jax
import pytest


@pytest.fixture(autouse=True, scope="package")
def _test_settings():
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    with jax.default_matmul_precision("highest"):
        yield
    jax.config.update("jax_disable_most_optimizations", previous)
