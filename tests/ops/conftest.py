"""ops tests compile hundreds of tiny XLA programs (one per hypothesis shape); skip XLA's
optimisation passes while they run, to cut compile time ~1.5x. The ops' results do not depend on
those passes beyond rounding, which the tolerances cover."""

from tests.support import fast_compiles_fixture

_fast_compiles = fast_compiles_fixture()
