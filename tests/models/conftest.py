"""Model tests compile many small programs: compile them with XLA's optimisations off."""

from tests.support import fast_compiles_fixture

_fast_compiles = fast_compiles_fixture()
