"""Shared fixtures."""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import settings
from support import PURE_TWINS

# CI runs the property tests with a fixed derivation of examples per test, so that a run is
# repeatable (a failure found there reproduces); developers get fresh random examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")



def _load_impls(name: str) -> list:
    """[pure module, compiled module] for ``name``; compiled is skipped if not built."""
    params = [pytest.param(PURE_TWINS[name], id="pure")]
    params.append(pytest.param(f"xmppd._speedups.{name}", id="compiled"))
    return params


def import_impl(modname: str):
    try:
        return importlib.import_module(modname)
    except ImportError as exc:  # pragma: no cover - depends on the build
        from xmppd._impl import REQUIRE_EXTENSIONS

        if REQUIRE_EXTENSIONS:
            raise
        pytest.skip(f"{modname} not built: {exc}")


@pytest.fixture(params=_load_impls("tokenizer"))
def tokenizer_impl(request):
    """The tokenizer module, once per implementation (ids ``pure`` and ``compiled``)."""
    return import_impl(request.param)


@pytest.fixture(params=_load_impls("jid"))
def jid_impl(request):
    """The JID module, once per implementation (ids ``pure`` and ``compiled``)."""
    return import_impl(request.param)


@pytest.fixture(params=_load_impls("wsframe"))
def wsframe_impl(request):
    """The WebSocket frame codec, once per implementation (ids ``pure`` and ``compiled``)."""
    return import_impl(request.param)


@pytest.fixture(params=_load_impls("clustercodec"))
def clustercodec_impl(request):
    """The cluster links' STANZA codec (``put_stanza``, ``parse_records``, ``FrameDecoder``),
    once per implementation (ids ``pure``: ``xmppd.cluster.codec``, and ``compiled``)."""
    return import_impl(request.param)


# -- a real server on ephemeral loopback ports ------------------------------------------------

from support import ServerThread  # noqa: E402


@pytest.fixture
def make_server(tmp_path):
    """Factory: ``make_server(users={"alice": "pw"}, **config_overrides)`` -> running server
    (or ``make_server(users=..., config_path=FILE)``: configured by a TOML file).

    The server runs in its own thread and event loop on 127.0.0.1 with ephemeral ports;
    it is stopped (``<system-shutdown/>``) at the end of the test.
    """
    started = []

    def factory(users=None, data_dir=None, config_path=None, **overrides):
        srv = ServerThread(data_dir or tmp_path / f"server{len(started)}", users or {}, overrides,
                           config_path)
        srv.start()
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server):
    """A running server for ``localhost`` with accounts alice, bob and carol (password
    ``secret``), PLAIN allowed over TLS."""
    return make_server(users={"alice": "secret", "bob": "secret", "carol": "secret"},
                       allow_plain=True)


# -- a PostgreSQL server of the tests' own (tests/pgserver.py) ------------------------------------


@pytest.fixture(scope="session")
def postgresql_server():
    """One throwaway PostgreSQL cluster for the session; skipped only where PostgreSQL (or
    asyncpg) is not installed and ``CI`` is unset."""
    from pgserver import PostgreSQLServer, find_bindir

    bindir = find_bindir()
    missing = "PostgreSQL is not installed (/usr/lib/postgresql/*/bin)" if bindir is None else ""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        missing = "asyncpg is not installed"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: CI installs it (.ci/run)")
        pytest.skip(missing)
    server = PostgreSQLServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgresql_url(postgresql_server):
    """The URL of a new, empty schema on the session's PostgreSQL server (for xmppd as
    good as a new database: ``postgresql_server.create_database()`` makes one of those)."""
    return postgresql_server.create_schema()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def make_storage(request, tmp_path):
    """A factory for an unopened backend, one parameter per backend: sqlite ones share one
    file per test, postgresql ones one new, empty schema (as good as a new database)."""
    from xmppd.storage import MemoryStorage, PostgreSQLStorage, SQLiteStorage

    if request.param == "postgresql":
        url = request.getfixturevalue("postgresql_url")

    def make():
        if request.param == "memory":
            return MemoryStorage()
        if request.param == "postgresql":
            return PostgreSQLStorage(url)
        return SQLiteStorage(tmp_path / "db" / "xmppd.sqlite")

    return make
