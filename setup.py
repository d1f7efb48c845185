"""Builds xmppd's compiled hot path (the Cython sources in ``_speedups/``).

Installation never fails for lack of Cython or a C compiler: xmppd then installs in
pure-Python mode and says so.  ``XMPPD_REQUIRE_EXTENSIONS=1`` turns that into a hard error,
as CI and wheel builds want.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("XMPPD_REQUIRE_EXTENSIONS", "") not in ("", "0")
SPEEDUPS = ["tokenizer", "jid", "wsframe", "clustercodec", "serialize"]


def _extensions():
    sources = [f"_speedups/{name}.pyx" for name in SPEEDUPS]
    exts = [
        Extension(f"xmppd._speedups.{name}", [src], extra_compile_args=["-O3"])
        for name, src in zip(SPEEDUPS, sources)
        if os.path.exists(src)
    ]
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE:
            raise
        print("xmppd: Cython is not available; installing in pure-Python mode", file=sys.stderr)
        return []
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )


class OptionalBuildExt(build_ext):
    """Falls back to pure Python when the C compiler is missing or fails."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "pure mode"
            self._fallback(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)

    def _fallback(self, exc):
        if REQUIRE:
            raise
        print(
            f"xmppd: could not build the compiled extensions ({exc}); "
            "installing in pure-Python mode",
            file=sys.stderr,
        )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
