"""Shrink a fuzz finding: ``python fuzz/minimize.py <harness> <crash file> [out file]``.

Greedy delta debugging over the input bytes: keeps any smaller input that still fails
with the same exception type and the same message head (numbers ignored),
then prints it (and writes it to ``out file``).  Cheap and good enough for regression
tests; libFuzzer's ``-minimize_crash=1`` does the same under atheris but needs a crash
that survives its fork.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def signature(one, data: bytes) -> tuple[str, str] | None:
    """How ``data`` fails (type, message head), or None when it passes."""
    try:
        one(data)
    except Exception as exc:  # noqa: BLE001 - any failure is a finding
        head = str(exc).split(" on ", 1)[0].split(":", 1)[0]
        return type(exc).__name__, re.sub(r"\d+", "N", head)
    return None


def shrink(one, data: bytes) -> bytes:
    target = signature(one, data)
    assert target is not None, "the input does not fail"
    size = max(len(data) // 2, 1)
    while size >= 1:
        i, changed = 0, False
        while i < len(data):
            candidate = data[:i] + data[i + size:]
            if signature(one, candidate) == target:
                data, changed = candidate, True
            else:
                i += size
        if not changed:
            size //= 2
    return data


def main() -> None:
    name, path = sys.argv[1], Path(sys.argv[2])
    mod = importlib.import_module(f"fuzz_{name}")
    small = shrink(mod.test_one_input, path.read_bytes())
    print(repr(small))
    try:
        mod.test_one_input(small)
    except Exception as exc:  # noqa: BLE001
        print(f"{type(exc).__name__}: {exc}")
    if len(sys.argv) > 3:
        Path(sys.argv[3]).write_bytes(small)


if __name__ == "__main__":
    main()
