"""Differential fuzzing of the JID twins (``xmppd.jid._pure`` vs ``xmppd._speedups.jid``).

Input layout: one mode byte (how to decode the text, which entry point to call), then
the text.  Every implementation must give the same prepared parts or the same
``JIDError`` (``part`` and ``reason``); no other exception is allowed.  Each result must
also be a fixed point: preparing a prepared JID changes nothing.

    python fuzz/fuzz_jid.py fuzz/corpus/jid -dict=fuzz/jid.dict
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _driver import FuzzInput, instrumented, main, twins  # noqa: E402

with instrumented(__name__ == "__main__"):
    from xmppd.jid import _pure as _jid_pure


IMPLS = twins(_jid_pure, "jid")

OPS = ("jid", "localpart", "domainpart", "resourcepart", "normalize", "from_parts",
       "with_resource", "jid-twice")
# How bytes become text: UTF-8 (as from the tokenizer), or UTF-16 to reach every code
# point densely (lone surrogates stay excluded: no XML text can carry them).
DECODINGS = ("utf-8", "utf-16-le", "latin-1")


def decode(data: bytes) -> tuple[str, str]:
    """(operation, text) of one fuzz input."""
    inp = FuzzInput(data)
    mode = inp.byte()
    raw = inp.rest()
    encoding = DECODINGS[(mode & 3) % 3]
    if encoding == "utf-16-le":
        raw = raw[: len(raw) & ~1]
    return OPS[(mode >> 2) % len(OPS)], raw.decode(encoding, "replace")


def encode(text: str, op: str = "jid") -> bytes:
    """The fuzz input that runs ``op`` on ``text``."""
    return bytes([OPS.index(op) << 2]) + text.encode("utf-8")


def _jid_outcome(jid) -> tuple:
    local, domain, resource = jid.localpart, jid.domain, jid.resource
    head = domain if local is None else f"{local}@{domain}"
    assert jid.full == (head if resource is None else f"{head}/{resource}"), repr(jid)
    assert str(jid) == jid.full
    for part in (local, domain, resource):
        assert part is None or 0 < len(part.encode("utf-8")) <= 1023, repr(jid)
    return ("ok", jid.full, local, domain, resource, jid.bare.full, jid.is_bare)


def outcome(mod, op: str, text: str) -> tuple:
    """What ``mod`` makes of ``text`` under ``op``: a result or (part, reason)."""
    try:
        if op == "jid":
            return _jid_outcome(mod.JID(text))
        if op == "jid-twice":  # the second call is served by the cache
            first = _jid_outcome(mod.JID(text))
            assert _jid_outcome(mod.JID(text)) == first, "cached JID differs"
            return first
        if op == "localpart":
            return ("ok", mod.prep_localpart(text))
        if op == "domainpart":
            return ("ok", mod.prep_domainpart(text))
        if op == "resourcepart":
            return ("ok", mod.prep_resourcepart(text))
        if op == "normalize":
            return ("ok", mod.normalize(text))
        if op == "from_parts":
            local, _, rest = text.partition("\0")
            domain, sep, resource = rest.partition("\0")
            jid = mod.JID.from_parts(local or None, domain, resource if sep else None)
            return _jid_outcome(jid)
        if op == "with_resource":
            base = mod.JID("user@example.org/orig")
            return _jid_outcome(base.with_resource(text))
    except mod.JIDError as exc:
        assert exc.part in ("localpart", "domainpart", "resourcepart"), exc.part
        assert isinstance(exc.reason, str) and exc.reason, exc.reason
        return ("error", exc.part, exc.reason)
    raise AssertionError(f"unknown op {op}")


def _check_fixed_point(mod, result: tuple) -> None:
    """RFC 7622 §3: preparation is idempotent, so a prepared JID re-prepares to itself."""
    if result[0] != "ok" or len(result) < 3:
        return
    full = result[1]
    try:
        again = _jid_outcome(mod.JID(full))
    except mod.JIDError as exc:
        raise AssertionError(f"prepared JID {full!r} is rejected: {exc}") from None
    assert again[1] == full, f"preparing {full!r} again gives {again[1]!r}"


# Findings filed as xfail regression tests (tests/test_fuzz_regressions.py) that the
# harness steps over so that a run can find new ones; FUZZ_STRICT=1 re-enables them.
KNOWN: list[tuple[type[BaseException], str]] = []


def _known(exc: BaseException) -> bool:
    if os.environ.get("FUZZ_STRICT", "") not in ("", "0"):
        return False
    return any(type(exc) is t and msg in str(exc) for t, msg in KNOWN)


def test_one_input(data: bytes) -> None:
    """The harness: all twins agree, raise only JIDError, and results are fixed points."""
    op, text = decode(data)
    try:
        results = {}
        for name, mod in IMPLS.items():
            results[name] = outcome(mod, op, text)
            _check_fixed_point(mod, results[name])
    except Exception as exc:
        if _known(exc):
            return
        raise
    pure = results["pure"]
    for name, got in results.items():
        if got != pure:
            raise AssertionError(
                f"JID twins diverge on {op}({text!r})\n  pure:  {pure!r}\n  {name}: {got!r}"
            )


if __name__ == "__main__":
    main("jid", test_one_input)
