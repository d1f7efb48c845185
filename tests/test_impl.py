"""Which implementation is active: compiled unless forced pure, and never a silent fallback
when the compiled modules are required."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from xmppd._impl import PURE_PYTHON, REQUIRE_EXTENSIONS


def _run(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("XMPPD_")}
    full_env.update(env)
    out = subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.parametrize(("public", "name", "compiled", "pure"), [
    ("xmppd.xml.tokenizer", "Tokenizer", "xmppd._speedups.tokenizer",
     "xmppd.xml._tokenizer_pure"),
    ("xmppd.web.wsframe", "FrameDecoder", "xmppd._speedups.wsframe", "xmppd.web._wsframe_pure"),
    ("xmppd.cluster.frames", "stanza_element", "xmppd._speedups.clustercodec",
     "xmppd.cluster.codec"),
    ("xmppd.xml.element", "_forward", "xmppd._speedups.serialize", "xmppd.xml.element"),
])
def test_public_names_are_the_active_implementation(public, name, compiled, pure):
    expected = pure if PURE_PYTHON else compiled
    try:
        importlib.import_module(compiled)
    except ImportError:
        expected = pure
    assert getattr(importlib.import_module(public), name).__module__ == expected


@pytest.mark.parametrize("module", ["xmppd._speedups.tokenizer", "xmppd._speedups.jid",
                                    "xmppd._speedups.wsframe", "xmppd._speedups.clustercodec",
                                    "xmppd._speedups.serialize"])
def test_required_extensions_are_importable(module):
    """Fails (never skips) when XMPPD_REQUIRE_EXTENSIONS=1 and a compiled module is missing:
    a silent fallback to pure Python is a performance bug."""
    if not REQUIRE_EXTENSIONS:
        pytest.skip("XMPPD_REQUIRE_EXTENSIONS is not set")
    importlib.import_module(module)


def test_pure_python_forced_in_a_subprocess():
    code = (
        "import xmppd._impl as i, xmppd.xml.tokenizer as t;"
        "print(i.implementation(), t.Tokenizer.__module__)"
    )
    assert _run(code, XMPPD_PURE_PYTHON="1") == "pure-Python xmppd.xml._tokenizer_pure"


def test_compiled_reported_in_a_subprocess():
    try:
        importlib.import_module("xmppd._speedups.tokenizer")
        importlib.import_module("xmppd._speedups.jid")
        importlib.import_module("xmppd._speedups.wsframe")
    except ImportError:
        pytest.skip("compiled modules not built")
    code = (
        "import xmppd._impl as i, xmppd.xml.tokenizer as t;"
        "print(i.implementation(), t.Tokenizer.__module__)"
    )
    assert _run(code, XMPPD_PURE_PYTHON="0") == "compiled (Cython) xmppd._speedups.tokenizer"
    assert _run(code, XMPPD_REQUIRE_EXTENSIONS="1") == "compiled (Cython) xmppd._speedups.tokenizer"


def test_missing_extension_is_an_error_when_required(tmp_path):
    """A compiled module that cannot be imported: a fallback normally, an ImportError when
    XMPPD_REQUIRE_EXTENSIONS=1 (simulated by shadowing it with a broken module)."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'xmppd._speedups.tokenizer':\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import xmppd.xml.tokenizer as t\n"
        "    print('fallback', t.Tokenizer.__module__)\n"
        "except ImportError as exc:\n"
        "    print('error', exc)\n"
    )
    assert _run(code) == "fallback xmppd.xml._tokenizer_pure"
    assert _run(code, XMPPD_REQUIRE_EXTENSIONS="1") == "error blocked for the test"
