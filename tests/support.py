"""Pieces shared by the test packages: faster compiles, and a machine without network."""

import socket

import jax
import pytest

_real_getaddrinfo = socket.getaddrinfo


def fast_compiles_fixture():
    """An autouse, package-scoped fixture that compiles with XLA's optimisations off.

    Test packages that compile many small programs use it, as the Flax ImageNet example's tests
    do; the setting is restored afterwards, so other packages' numerics are unaffected.
    """

    @pytest.fixture(autouse=True, scope="package")
    def _fast_compiles():
        previous = jax.config.read("jax_disable_most_optimizations")
        jax.config.update("jax_disable_most_optimizations", True)
        yield
        jax.config.update("jax_disable_most_optimizations", previous)

    return _fast_compiles


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes every host name but localhost unresolvable, as on a machine without network.

    This is the failure this project's offline machines show (``[Errno -2] Name or service not
    known``); code under test meets it at the socket layer, nothing above is mocked.
    """

    def offline_getaddrinfo(host, *args, **kwargs):
        if host in ("localhost", "127.0.0.1", "::1"):
            return _real_getaddrinfo(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline_getaddrinfo)
