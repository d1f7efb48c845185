"""Differential tests: the compiled forwarding serializer (``_speedups/serialize.pyx``)
against its pure twin, ``xmppd.xml.element.forward_bytes`` (the specification): the same
bytes for every input, or the same exception; and ``Element.to_bytes`` through it writes
what the full serializer writes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import twins

from xmppd.xml.element import XML_LANG, Element
from xmppd.xml.stanza import CLIENT_NS
from xmppd.xml.tokenizer import Tokenizer

pure, compiled = twins("serialize")

SETTINGS = settings(max_examples=500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

SPECIAL = st.sampled_from(list('&<>"\t\n\r\'=é€😀 {}') + ["\ud800", "\x00", "\x7f"])
TEXT = st.lists(st.one_of(SPECIAL, st.characters(), st.sampled_from(["a", "b@c/d"])),
                max_size=12).map("".join)
KEYS = st.one_of(st.sampled_from(["to", "from", "id", "type", XML_LANG, "{urn:y}a", ""]),
                 st.from_regex(r"[a-z_][a-z0-9.\-]{0,6}", fullmatch=True), TEXT)
VALUES = st.one_of(TEXT, st.sampled_from([3, None, b"x"]))
NAMES = st.sampled_from(["message", "presence", "iq", "x", "é"])
NS = st.sampled_from([CLIENT_NS, "jabber:server", "urn:x&\"<", "", "é:ns"])
DEFAULTS = st.sampled_from([CLIENT_NS, "jabber:server", None, ""])
RAW = st.sampled_from([b"", b"<body>hi</body>", b"x", "é".encode(), b"<a/><b xmlns='urn:q'/>"])


def outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # the type is what must agree
        return type(exc)


needs_compiled = pytest.mark.skipif(compiled is None, reason="compiled serializer not built")


@needs_compiled
@SETTINGS
@given(NAMES, NS, st.dictionaries(KEYS, VALUES, max_size=6), RAW, DEFAULTS)
def test_compiled_forward_bytes_matches_pure(name, ns, attrs, raw, default_ns):
    assert outcome(compiled.forward_bytes, name, ns, dict(attrs), raw, default_ns) == \
        outcome(pure.forward_bytes, name, ns, dict(attrs), raw, default_ns)


@needs_compiled
@pytest.mark.parametrize("count", [0, 1, 31, 32, 33, 100])
def test_any_number_of_attributes(count):
    attrs = {f"a{i}": f'v"{i}' for i in range(count)}
    assert compiled.forward_bytes("iq", CLIENT_NS, attrs, b"<q/>", CLIENT_NS) == \
        pure.forward_bytes("iq", CLIENT_NS, attrs, b"<q/>", CLIENT_NS)


@needs_compiled
@pytest.mark.parametrize(("args", "expected"), [
    (("message", CLIENT_NS, {"to": "a@b/c", "id": 'x&<>"\t\n\r'}, b"<body>hi</body>", CLIENT_NS),
     b'<message to="a@b/c" id="x&amp;&lt;&gt;&quot;&#9;&#10;&#13;"><body>hi</body></message>'),
    (("iq", "urn:x&", {}, b"", None), b'<iq xmlns="urn:x&amp;"/>'),
    (("iq", "urn:x", {"{urn:y}a": "1", "b": "é"}, b"", "urn:x"),
     b'<iq xmlns:ns0="urn:y" ns0:a="1" b="\xc3\xa9"/>'),
    (("presence", CLIENT_NS, {XML_LANG: "en"}, b"<show>away</show>", "jabber:server"),
     b'<presence xmlns="jabber:client" xml:lang="en"><show>away</show></presence>'),
])
def test_forward_bytes_cases(args, expected):
    assert compiled.forward_bytes(*args) == expected
    assert pure.forward_bytes(*args) == expected


@SETTINGS
@given(st.dictionaries(st.sampled_from(["to", "from", "id", "type", XML_LANG]),
                       TEXT.filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)),
                       max_size=5),
       st.sampled_from([b"", b"<body>a &amp; b</body>", b'<x xmlns="urn:q"><y/></x>']),
       st.sampled_from([CLIENT_NS, "jabber:server"]))
def test_to_bytes_of_a_parsed_stanza_is_what_the_full_serializer_writes(attrs, inner, default_ns):
    """The forwarding form (content reused as bytes) against the tree written afresh
    (content in the form the serializer writes, so that the bytes can be compared)."""
    tok = Tokenizer()
    tok.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    (element,) = [e for e in tok.feed(b"<message>" + inner + b"</message>") if isinstance(e, Element)]
    element.attrs.update(attrs)
    forwarded = element.to_bytes(default_ns)
    fresh = element.copy()
    fresh._raw_inner = None  # written from the tree
    assert forwarded == fresh.to_bytes(default_ns)
