"""Differential fuzzing of the stream tokenizer twins.

Input layout (see :func:`decode`): one byte of limits, four bytes seeding the chunk
borders, then the stream bytes.  Every implementation gets the same chunks; their
traces (events per ``feed``, or the error condition and the events completed before it)
must be equal, and every trace must satisfy the contract of ``xmppd.xml._tokenizer_pure``.
A top-level ``<success/>`` ending a ``feed`` triggers ``restart()`` and ``<proceed/>``
triggers ``reset()``, as the c2s layer does after SASL and STARTTLS.

    python fuzz/fuzz_tokenizer.py fuzz/corpus/tokenizer -dict=fuzz/tokenizer.dict
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _driver import FuzzInput, instrumented, main, pieces, split_points, twins  # noqa: E402

with instrumented(__name__ == "__main__"):
    from xmppd.xml import _tokenizer_pure
    from xmppd.xml.element import Element, escape_attr
    from xmppd.xml.events import (
        CONDITIONS,
        MAX_ATTRS,
        MAX_DEPTH,
        MAX_STANZA_SIZE,
        StreamClose,
        StreamOpen,
        TokenizerError,
    )


IMPLS = twins(_tokenizer_pure, "tokenizer")

# Small limits make policy-violation reachable within -max_len bytes.
STANZA_SIZES = (MAX_STANZA_SIZE, 48, 200, 1000)
DEPTHS = (MAX_DEPTH, 0, 1, 3)
ATTRS = (MAX_ATTRS, 0, 2, 5)


@dataclass(frozen=True)
class Case:
    """One decoded fuzz input."""

    max_stanza_size: int
    max_depth: int
    max_attrs: int
    stream_ops: bool  # restart()/reset() on <success/>/<proceed/>
    chunks: tuple[bytes, ...]


def decode(data: bytes) -> Case:
    inp = FuzzInput(data)
    limits = inp.byte()
    seed = bytes(inp.byte() for _ in range(4))
    body = inp.rest()
    return Case(
        STANZA_SIZES[limits & 3],
        DEPTHS[(limits >> 2) & 3],
        ATTRS[(limits >> 4) & 3],
        bool(limits & 0x40),
        tuple(pieces(body, split_points(seed, len(body)))),
    )


def encode(body: bytes, *, limits: int = 0, seed: bytes = b"\0\0\0\0") -> bytes:
    """The fuzz input that feeds ``body`` with the given limit byte and split seed."""
    return bytes([limits]) + seed + body


# -- normalized traces -----------------------------------------------------------------


def norm(event: object) -> tuple:
    """A comparable, order-insensitive-for-attributes form of one event or child."""
    if isinstance(event, str):
        return ("text", event)
    if isinstance(event, Element):
        return ("el", event.name, event.ns, tuple(sorted(event.attrs.items())),
                tuple(norm(k) for k in event._kids()))
    if isinstance(event, StreamOpen):
        return ("open", event.name, event.ns, tuple(sorted(event.attrs.items())),
                tuple(sorted(event.namespaces.items())))
    if isinstance(event, StreamClose):
        return ("close",)
    raise AssertionError(f"unexpected event type {type(event).__name__}: {event!r}")


def _check_children(el: Element) -> None:
    kids = el._kids()
    for a, b in zip(kids, kids[1:], strict=False):
        assert not (isinstance(a, str) and isinstance(b, str)), f"adjacent text in {el!r}"
    for k in kids:
        if isinstance(k, str):
            assert k, f"empty text child in {el!r}"
        else:
            assert isinstance(k, Element), f"bad child {k!r}"
            _check_children(k)


def _check_roundtrip(el: Element, header: StreamOpen) -> None:
    """An element written back under a header declaring the same namespaces parses (by the
    specification twin) to an equal element: the serializer, or the raw bytes a tokenizer
    keeps for forwarding, lose nothing."""
    decls = "".join(
        f' xmlns{":" + prefix if prefix else ""}="{escape_attr(uri)}"'
        for prefix, uri in header.namespaces.items()
    )
    default_ns = header.namespaces.get("")
    wire = el.to_bytes(default_ns)
    tok = _tokenizer_pure.Tokenizer(1 << 30, 1 << 20, 1 << 20)
    try:
        events = tok.feed(f"<r{decls}>".encode() + wire)
    except TokenizerError as exc:  # not the traced tokenizer's error: the writer's fault
        raise AssertionError(f"{wire!r} does not parse back: {exc}") from None
    assert len(events) == 2, f"re-parsing {wire!r} gave {events!r}"
    assert norm(events[1]) == norm(el), f"round trip changed {el!r}: {wire!r}"


def trace(impl, case: Case, *, roundtrip: bool = True) -> list[tuple]:
    """Feed ``case`` to ``impl``; the normalized trace.  Non-tokenizer errors propagate."""
    tok = impl.Tokenizer(case.max_stanza_size, case.max_depth, case.max_attrs)
    out: list[tuple] = []
    header: StreamOpen | None = None

    def record(events: list) -> None:
        nonlocal header
        for ev in events:
            if isinstance(ev, StreamOpen):
                header = ev
            elif isinstance(ev, Element):
                _check_children(ev)
                if roundtrip and header is not None:
                    _check_roundtrip(ev, header)
        out.append(("events", tuple(norm(e) for e in events)))

    try:
        for chunk in case.chunks:
            events = tok.feed(chunk)
            record(events)
            out.append(("buffered", getattr(tok, "buffered", None)))
            last = events[-1] if events else None
            if case.stream_ops and isinstance(last, Element) and last.name == "success":
                record(tok.restart())
            elif case.stream_ops and isinstance(last, Element) and last.name == "proceed":
                tok.reset()
                out.append(("reset",))
    except TokenizerError as exc:
        assert exc.condition in CONDITIONS, f"unknown condition {exc.condition!r}"
        record(exc.events)
        out.append(("error", exc.condition))
        # Every later feed raises the same error (restart() and reset() may revive it).
        try:
            tok.feed(b"<a/>")
        except TokenizerError as exc2:
            assert exc2.condition == exc.condition, (exc.condition, exc2.condition)
        else:
            raise AssertionError("a failed tokenizer accepted more data") from None
    return out


# Findings filed as xfail regression tests in tests/test_fuzz_regressions.py, which the
# harness steps over so that a run can find new ones: (label, test on the case and the
# exception).  FUZZ_STRICT=1 turns them back into findings (to see whether they are fixed).
# Open findings skipped in ordinary runs: (description, test(case, exc) -> bool).
# FUZZ_STRICT=1 reports them anyway.  Everything found so far is fixed.
KNOWN: list[tuple[str, Callable[[Case, Exception], bool]]] = []


def _known(case: Case, exc: Exception) -> bool:
    if os.environ.get("FUZZ_STRICT", "") not in ("", "0"):
        return False
    return any(test(case, exc) for _, test in KNOWN)


def outcome(tr: list[tuple]) -> tuple:
    """All the events of a trace and how it ended, whatever the chunking was."""
    events = tuple(e for step in tr if step[0] == "events" for e in step[1])
    errors = [step[1] for step in tr if step[0] == "error"]
    return events, errors[0] if errors else None


def _check(case: Case) -> None:
    traces = {name: trace(impl, case) for name, impl in IMPLS.items()}
    pure = traces["pure"]
    for name, got in traces.items():
        if got != pure:
            i = next((i for i, (a, b) in enumerate(zip(pure, got, strict=False)) if a != b),
                     min(len(pure), len(got)))
            raise AssertionError(
                f"tokenizer twins diverge at step {i} on {case!r}\n"
                f"  pure:  {pure[max(i - 2, 0):i + 3]!r}\n  {name}: {got[max(i - 2, 0):i + 3]!r}"
            )
    if not case.stream_ops and len(case.chunks) > 1:
        # However the bytes were split, the same events and the same error.
        whole = Case(case.max_stanza_size, case.max_depth, case.max_attrs, False,
                     (b"".join(case.chunks),))
        for name, impl in IMPLS.items():
            split, once = outcome(traces[name]), outcome(trace(impl, whole, roundtrip=False))
            if split != once:
                raise AssertionError(
                    f"{name} tokenizer depends on the split of {case!r}\n"
                    f"  split: {split!r}\n  whole: {once!r}"
                )


def test_one_input(data: bytes) -> None:
    """The harness: the twins agree, each follows the contract, the split does not matter."""
    case = decode(data)
    try:
        _check(case)
    except Exception as exc:
        if _known(case, exc):
            return
        raise


if __name__ == "__main__":
    main("tokenizer", test_one_input)
