"""Differential fuzzing of the cluster links' STANZA codec twins (``xmppd.cluster.codec``,
the specification, vs ``xmppd._speedups.clustercodec``).

Input layout: four bytes that choose where the wire is split, then the wire bytes (frames:
a 4-byte length, then records).  Every implementation must hand out the same records, and
for malformed input the same ``CodecError`` (with the same records before it), whole or
split; no other exception is allowed.  Each frame's body is also given to
``parse_records`` (any bounds) and each STANZA record's XML to ``stanza_element``: the
same element (name, attributes, content bytes, kept wire) or None from both, and an
element's ``to_bytes`` gives back the very bytes it was built from; and to
``plain_stanza``: the same answer from both, True only for bytes that, parsed by the
tokenizer, carry none of the namespaces (or do not parse: a peer is trusted to send
well-formed XML, which goes to the recipient as it came).

    python fuzz/fuzz_clustercodec.py fuzz/corpus/clustercodec -dict=fuzz/clustercodec.dict
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _driver import FuzzInput, instrumented, main, pieces, split_points, twins  # noqa: E402

with instrumented(__name__ == "__main__"):
    from xmppd.cluster import codec
    from xmppd.xml.events import TokenizerError
    from xmppd.xml.stanza import CLIENT_NS, decode_stanza


IMPLS = twins(codec, "clustercodec")
#: payload namespaces for ``plain_stanza`` (in the dictionary, so the fuzzer writes them)
ENCODED = (b"urn:xmpp:carbons:2", b"urn:x")
NAMESPACES = frozenset(ns.decode() for ns in ENCODED)


def encode(wire: bytes, cuts: bytes = b"\0\0\0\0") -> bytes:
    """The fuzz input that feeds ``wire`` (whole by default)."""
    return cuts + wire


def feed(impl, parts: list[bytes]) -> tuple:
    decoder = impl.FrameDecoder()
    records: list[tuple] = []
    try:
        for part in parts:
            records += decoder.feed(part)
    except codec.CodecError:
        return records, True
    return records, False


def parse(impl, body: bytes, pos: int, end: int) -> tuple:
    out: list[tuple] = []
    try:
        impl.parse_records(body, pos, end, out)
    except codec.CodecError:
        return out, True
    return out, False


def _parsed(data: bytes):
    """The stanza the tokenizer reads in ``data``; None if it does not parse."""
    try:
        return decode_stanza(data)
    except (ValueError, TokenizerError):
        return None


def shape(element) -> tuple | None:
    if element is None:
        return None
    return (element.name, element.ns, element.attrs, element._raw_inner, element._wire,
            type(element._lazy).__name__)


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    seed = bytes(inp.byte() for _ in range(4))
    wire = inp.rest()
    whole = feed(codec, [wire])
    split = feed(codec, pieces(wire, split_points(seed, len(wire))))
    if not whole[1]:
        assert split == whole, ("pure split", split, whole)
    for name, impl in IMPLS.items():
        assert feed(impl, [wire]) == whole, (name, "whole")
        assert feed(impl, pieces(wire, split_points(seed, len(wire)))) == split, (name, "split")
    body = wire[4:]
    pos, end = seed[0] % 8, len(body) - seed[1] % 4
    expected = parse(codec, body, pos, end)
    for name, impl in IMPLS.items():
        assert parse(impl, body, pos, end) == expected, (name, "parse_records")
    for record in whole[0] + expected[0]:
        if record[0] != codec.STANZA:
            continue
        built = codec.stanza_element(record[2])
        plain = codec.plain_stanza(record[2], ENCODED)
        for name, impl in IMPLS.items():
            assert shape(impl.stanza_element(record[2])) == shape(built), (name, record[2])
            assert impl.plain_stanza(record[2], ENCODED) is plain, (name, "plain_stanza")
        if plain:  # written as it came: what it says, parsed, carries none of them
            parsed = _parsed(record[2])
            assert parsed is None or not parsed.carries(NAMESPACES, ENCODED), record[2]
        if built is not None:
            assert built.to_bytes(CLIENT_NS) is record[2]


if __name__ == "__main__":
    main("clustercodec", test_one_input)
