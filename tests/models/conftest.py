"""Model tests compile many small programs: compile them with XLA's optimisations off.

The Flax ImageNet example's tests do the same. Set for this package only and restored
afterwards, so other packages' tests and their numerics are unaffected.
"""
import jax
import pytest


@pytest.fixture(autouse=True, scope="package")
def _fast_compiles():
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
