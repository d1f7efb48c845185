"""The one place that chooses between compiled and pure-Python implementations.

``XMPPD_PURE_PYTHON=1`` forces the pure twins.  ``XMPPD_REQUIRE_EXTENSIONS=1`` makes a
missing compiled module an import error instead of a silent (slow) fallback.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


PURE_PYTHON = _flag("XMPPD_PURE_PYTHON")
REQUIRE_EXTENSIONS = _flag("XMPPD_REQUIRE_EXTENSIONS")

#: name -> "compiled" or "pure", filled as modules are chosen
CHOSEN: dict[str, str] = {}


def choose(name: str, pure: str) -> ModuleType:
    """Return ``xmppd._speedups.<name>`` or, failing that, the pure module ``pure``."""
    if not PURE_PYTHON:
        try:
            mod = importlib.import_module(f"xmppd._speedups.{name}")
        except ImportError:
            if REQUIRE_EXTENSIONS:
                raise
        else:
            CHOSEN[name] = "compiled"
            return mod
    CHOSEN[name] = "pure"
    return importlib.import_module(pure)


def implementation() -> str:
    """A short description of the active implementation, for ``--version`` and logs."""
    # Import the public modules so that every choice has been made.
    import xmppd.cluster.frames  # noqa: F401
    import xmppd.jid  # noqa: F401
    import xmppd.web.wsframe  # noqa: F401
    import xmppd.xml.tokenizer  # noqa: F401

    kinds = set(CHOSEN.values())
    if kinds == {"compiled"}:
        return "compiled (Cython)"
    if kinds == {"pure"}:
        return "pure-Python"
    return "mixed: " + ", ".join(f"{k}={v}" for k, v in sorted(CHOSEN.items()))
