"""ops tests compile hundreds of tiny XLA programs (one per hypothesis shape); skip XLA's
optimisation passes while they run, as Flax's ImageNet tests do, to cut compile time ~1.5x.
The ops' results do not depend on those passes beyond rounding, which the tolerances cover."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="package")
def _fast_compiles():
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
