"""nn tests compile small models; XLA's optimisation passes off, as in the ops tests."""

from tests.support import fast_compiles_fixture

_fast_compiles = fast_compiles_fixture()
