"""Shared fixtures."""

from __future__ import annotations

import importlib

import pytest


def _load_impls(name: str) -> list:
    """[pure module, compiled module] for ``name``; compiled is skipped if not built."""
    params = [pytest.param(f"xmppd._{name}_pure", id="pure")]
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
