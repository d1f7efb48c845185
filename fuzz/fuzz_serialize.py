"""Differential fuzzing of the forwarding serializer twins (``xmppd.xml.element.forward_bytes``
vs ``xmppd._speedups.serialize``).

Input layout: one mode byte (the element's name, namespace and the stream's default
namespace), one byte for the number of attributes, then for each a length-prefixed key and
value (UTF-8, invalid bytes kept as lone surrogates: those cannot be encoded, and both twins
must fail alike), then the raw content.  Every implementation must give the same bytes or
raise the same exception type; where the keys are plain names, the start tag must hold
values escaped (no ``"``, ``<`` or ``&`` that is not a reference).

    python fuzz/fuzz_serialize.py fuzz/corpus/serialize -dict=fuzz/serialize.dict
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _driver import FuzzInput, instrumented, main, twins  # noqa: E402

with instrumented(__name__ == "__main__"):
    from xmppd.xml import element as _element
    from xmppd.xml.stanza import CLIENT_NS


IMPLS = twins(_element, "serialize")

REF = re.compile(rb"&(?:amp|lt|gt|quot|#9|#10|#13);")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
NAMES = ("message", "presence", "iq", "x", "é")
NAMESPACES = (CLIENT_NS, "jabber:server", "urn:x&\"<", "", None)


def text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def decode(data: bytes) -> tuple[str, str, dict[str, str], bytes, str | None]:
    """(name, namespace, attributes, raw content, default namespace) of one fuzz input."""
    inp = FuzzInput(data)
    mode = inp.byte()
    name = NAMES[mode % len(NAMES)]
    ns = NAMESPACES[(mode >> 3) % 4]
    default_ns = NAMESPACES[(mode >> 5) % len(NAMESPACES)]
    attrs = {}
    for _ in range(inp.byte() % 40):
        key = text(inp.chunk())
        attrs[key] = text(inp.chunk())
    return name, ns, attrs, inp.rest(), default_ns


def encode(mode: int = 0, attrs: dict[bytes, bytes] | None = None, raw: bytes = b"") -> bytes:
    """The fuzz input for ``attrs`` and ``raw`` (``mode``: the mode byte)."""
    out = bytearray([mode, len(attrs or {})])
    for key, value in (attrs or {}).items():
        out += bytes([len(key)]) + key + bytes([len(value)]) + value
    return bytes(out + raw)


def outcome(impl, args: tuple) -> bytes | type:
    try:
        return impl.forward_bytes(*args)
    except Exception as exc:  # the type is what must agree
        return type(exc)


def test_one_input(data: bytes) -> None:
    name, ns, attrs, raw, default_ns = decode(data)
    args = (name, ns, attrs, raw, default_ns)
    want = outcome(_element, args)
    if isinstance(want, bytes) and all(NAME.fullmatch(key) for key in attrs):
        # the start tag (keys are names the caller vouches for): values escaped, quotes paired
        head = want[:len(want) - len(raw) - len(name.encode()) - 3] if raw else want
        assert head.count(b"<") == 1 and head.count(b'"') % 2 == 0, head
        assert all(REF.match(head, i) for i in range(len(head)) if head[i] == 0x26), head
    for label, impl in IMPLS.items():
        got = outcome(impl, args)
        assert got == want, (label, got, want)


if __name__ == "__main__":
    main("serialize", test_one_input)
