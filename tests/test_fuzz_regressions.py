"""Every crash or divergence the fuzzers (``fuzz/``) found, as a regression test.

Findings not fixed yet are ``xfail(strict=True)`` for the implementation that is wrong,
with the reason; when the fix lands the test XPASSes, fails, and the marker must go.
Each input is also replayed through its harness with ``FUZZ_STRICT=1`` (known findings
not skipped), which checks the twins against each other and the split invariance.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from xmppd.xml.events import StreamClose, StreamOpen, TokenizerError

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"


def harness(name: str):
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    return importlib.import_module(f"fuzz_{name}")


def impl_name(mod) -> str:
    return "compiled" if mod.__name__.startswith("xmppd._speedups.") else "pure"


def xfail_for(request, mod, which: str, reason: str) -> None:
    """Mark the running test xfail(strict) when ``mod`` is the ``which`` twin."""
    if impl_name(mod) == which:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def feed_all(mod, chunks: list[bytes]) -> tuple[list, str | None]:
    """All events from feeding ``chunks``, and the error condition (or None)."""
    tok = mod.Tokenizer()
    events: list = []
    try:
        for chunk in chunks:
            events += tok.feed(chunk)
    except TokenizerError as exc:
        return events + exc.events, exc.condition
    return events, None


def splits(data: bytes) -> list[list[bytes]]:
    """``data`` whole, byte by byte, and cut in two at every offset."""
    out = [[data], [data[i : i + 1] for i in range(len(data))]]
    out += [[data[:i], data[i:]] for i in range(1, len(data))]
    return out


# -- tokenizer -------------------------------------------------------------------------------

HEADER = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"


def test_self_closing_stream_header(tokenizer_impl) -> None:
    """Found by fuzz_tokenizer: ``<stream:stream .../>`` made the pure twin raise
    ValueError ("subsection not found") from ``_end``."""
    for chunks in splits(HEADER + b"/>"):
        events, error = feed_all(tokenizer_impl, chunks)
        assert error is None, chunks
        assert [type(e) for e in events] == [StreamOpen, StreamClose], chunks


@pytest.mark.parametrize("data", [b"a\x00", b" \x00", b"\r\x00<a>", b"\t\x00", b"-\x00"])
def test_nul_second_byte_is_refused(request, tokenizer_impl, data: bytes) -> None:
    """Found by fuzz_tokenizer (split invariance): when the second byte is NUL, expat
    re-reads the stream as UTF-16LE, so the pure twin reports nothing for ``b" \\x00"``
    fed whole but not-well-formed when the NUL comes in a chunk of its own.  The compiled
    twin says not-well-formed either way.  Whatever the condition, it must not depend on
    the split (the pure twin refuses ``<\\x00`` as unsupported-encoding already)."""
    outcomes = {feed_all(tokenizer_impl, chunks)[1] for chunks in splits(data)}
    assert len(outcomes) == 1, outcomes
    assert outcomes.pop() in ("unsupported-encoding", "not-well-formed")


@pytest.mark.parametrize("tail", [b"x", b"<b/>", b"\xff", b"&amp;"])
def test_junk_after_stream_close(tokenizer_impl, tail: bytes) -> None:
    """Found by fuzz_tokenizer (twin divergence, in a work-in-progress build of the
    compiled twin): after ``</stream:stream>`` the pure twin refuses any non-whitespace
    as not-well-formed; the compiled twin ignored text there."""
    for chunks in ([HEADER + b"></stream:stream>" + tail],
                   [HEADER + b"></stream:stream>", tail]):
        events, error = feed_all(tokenizer_impl, chunks)
        assert error == "not-well-formed", chunks
        assert [type(e) for e in events] == [StreamOpen, StreamClose], chunks


def test_whitespace_after_stream_close_is_fine(tokenizer_impl) -> None:
    events, error = feed_all(tokenizer_impl, [HEADER + b"></stream:stream>", b" \r\n\t"])
    assert error is None
    assert [type(e) for e in events] == [StreamOpen, StreamClose]


@pytest.mark.parametrize("data", [b"#s:s", b"#<a>", b"\xc3\xa9<a>"])
def test_junk_before_header_reported_at_once(request, tokenizer_impl, data: bytes) -> None:
    """Found by fuzz_tokenizer (twin divergence): bytes that cannot start any XML token
    before the stream header are not-well-formed as soon as expat sees them; the compiled
    twin only reports them at the next ``<`` (so ``#s:s`` fed alone passes)."""
    assert feed_all(tokenizer_impl, [data]) == ([], "not-well-formed")


# Each tokenizer finding as a harness input: (limits byte, split seed, stream bytes).
TOKENIZER_FINDINGS = {
    "self-closing-header": (0, b"\x02abc", HEADER + b"/>"),
    "nul-second-byte": (0, b"\x02abc", b" \x00<a>"),
    "junk-after-close": (0, b"\x01\x00\x00\x00", HEADER + b"></stream:stream>x"),
    "junk-before-header": (0x7e, b"\x00\x00\x00\x00", b"#s:s"),
    # The serializer split Clark-notation keys at the first "}" although a namespace name
    # may contain one: the element it wrote did not parse back.
    "brace-in-attribute-namespace": (
        0, b"\x00\x00\x00\x00",
        b"<s:stream xmlns:s='heams' xmlns:x='&lt;urn:}urn:x' xmlns='jabber:server'>"
        b"<x:a x:attr='1'/>",
    ),
    # The pure twin returns [StreamOpen, StreamClose] and waits (expat holds "a:" as a
    # partial name); the compiled twin raises not-well-formed in the same feed.
    "name-colon-after-close": (0, b"\x00\x00\x00\x00", b"<a/>a:"),
    # Same cause, pure twin alone: fed byte by byte, "a" after the close is junk at once.
    "name-colon-after-close-split": (0, b"\x01\x00\x00\x00", b"<a/>a:"),
}
# Findings still open (name -> reason), run as xfail(strict=True); all fixed so far.
TOKENIZER_XFAIL: dict[str, str] = {}


@pytest.mark.parametrize("name", sorted(TOKENIZER_FINDINGS))
def test_tokenizer_findings_through_the_harness(request, monkeypatch, name: str) -> None:
    monkeypatch.setenv("FUZZ_STRICT", "1")
    mod = harness("tokenizer")
    pure_only = ("nul-second-byte", "name-colon-after-close-split")
    if name in TOKENIZER_XFAIL and (name in pure_only or "compiled" in mod.IMPLS):
        request.applymarker(pytest.mark.xfail(strict=True, reason=TOKENIZER_XFAIL[name]))
    limits, seed, body = TOKENIZER_FINDINGS[name]
    mod.test_one_input(mod.encode(body, limits=limits, seed=seed))
