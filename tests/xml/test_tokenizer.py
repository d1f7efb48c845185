"""Conformance corpus for both tokenizer implementations (fixture ``tokenizer_impl``)."""

from __future__ import annotations

import pytest

from xmppd.xml.element import XML_LANG, Element
from xmppd.xml.events import STREAM_NS, StreamClose, StreamOpen, TokenizerError

HEADER = (
    b"<?xml version='1.0' encoding='UTF-8'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='example.com' version='1.0' xml:lang='en'>"
)
OPEN = StreamOpen(
    "stream",
    STREAM_NS,
    {"to": "example.com", "version": "1.0", XML_LANG: "en"},
    {"": "jabber:client", "stream": STREAM_NS},
)
C = "jabber:client"


def feed_all(tok, chunks) -> list:
    events: list = []
    for chunk in chunks:
        events.extend(tok.feed(chunk))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def parse(impl, data: bytes, **limits) -> list:
    """Events for ``data`` fed whole; also checks byte-at-a-time feeding gives the same."""
    whole = feed_all(impl.Tokenizer(**limits), [data])
    assert feed_all(impl.Tokenizer(**limits), bytewise(data)) == whole
    return whole


def error(impl, data: bytes, **limits) -> TokenizerError:
    """The error for ``data`` fed whole; byte-at-a-time feeding must give the same
    condition, with the same events before it."""
    results = []
    for chunks in ([data], bytewise(data)):
        tok = impl.Tokenizer(**limits)
        events: list = []
        with pytest.raises(TokenizerError) as info:
            for chunk in chunks:
                events.extend(tok.feed(chunk))
        events.extend(info.value.events)
        results.append((info.value.condition, events))
        # dead afterwards: every feed raises the same error, nothing more is emitted
        with pytest.raises(TokenizerError) as again:
            tok.feed(b"<message/>")
        assert again.value is info.value
    assert results[0] == results[1]
    condition, events = results[0]
    return TokenizerError(condition, "", events)


# -- valid streams ------------------------------------------------------------------------


def test_header(tokenizer_impl):
    assert parse(tokenizer_impl, HEADER) == [OPEN]


def test_header_without_declaration_and_with_bom(tokenizer_impl):
    data = b"\xef\xbb\xbf<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
    assert parse(tokenizer_impl, data) == [StreamOpen("stream", STREAM_NS, {}, {"stream": STREAM_NS})]


def test_stanzas_children_text(tokenizer_impl):
    data = HEADER + (
        b"<message to='juliet@example.com' type='chat' id='m1'>"
        b"<body>Wherefore art thou, Romeo? &lt;3 &amp; caf\xc3\xa9 \xf0\x9f\x98\x80</body>"
        b"<active xmlns='http://jabber.org/protocol/chatstates'/>"
        b"</message>"
        b" \n\t "  # whitespace keepalive
        b"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/></presence>"
        b"</stream:stream>"
    )
    events = parse(tokenizer_impl, data)
    assert events[0] == OPEN
    body = Element("body", C, {}, ["Wherefore art thou, Romeo? <3 & café 😀"])
    active = Element("active", "http://jabber.org/protocol/chatstates", {}, [])
    assert events[1] == Element(
        "message", C, {"to": "juliet@example.com", "type": "chat", "id": "m1"}, [body, active]
    )
    assert events[1].findtext("body") == body.text
    caps = Element("c", "http://jabber.org/protocol/caps", {"hash": "sha-1", "node": "n", "ver": "v="})
    assert events[2] == Element("presence", C, {}, [caps])
    assert events[3] == StreamClose()
    assert len(events) == 4


def test_namespaced_attributes_and_lang(tokenizer_impl):
    data = HEADER + (
        b"<iq type='get' id='1' xmlns:p='urn:p'><query xmlns='urn:q' p:attr='x' xml:lang='fr'"
        b" attr='y'><p:item/></query></iq>"
    )
    (_, iq) = parse(tokenizer_impl, data)
    query = iq.find("query", "urn:q")
    assert query is not None
    assert query.attrs == {"{urn:p}attr": "x", XML_LANG: "fr", "attr": "y"}
    assert query.children == [Element("item", "urn:p")]


def test_cdata_char_refs_and_newlines(tokenizer_impl):
    data = HEADER + (
        b"<message><body>a<![CDATA[<b>&amp;]]]>&#65;&#x42;&#13;c\r\nd\re</body>"
        b"<x a='1\t2\n3\r\n4&#9;5&#10;6'/></message>"
    )
    (_, msg) = parse(tokenizer_impl, data)
    assert msg.findtext("body") == "a<b>&amp;]AB\rc\nd\ne"
    assert msg.find("x").get("a") == "1 2 3 4\t5\n6"


def test_stream_prefix_inside_stanza(tokenizer_impl):
    data = HEADER + b"<message><stream:x/></message>"
    (_, msg) = parse(tokenizer_impl, data)
    assert msg.children == [Element("x", STREAM_NS)]


def test_events_come_as_soon_as_the_last_byte_arrives(tokenizer_impl):
    tok = tokenizer_impl.Tokenizer()
    assert tok.feed(HEADER[:-1]) == []
    assert tok.feed(HEADER[-1:]) == [OPEN]
    assert tok.feed(b"<presence/") == []
    assert tok.buffered == len(b"<presence/")
    assert tok.feed(b">") == [Element("presence", C)]
    assert tok.buffered == 0
    assert tok.feed(b"  ") == []
    assert tok.buffered == 2


AUTH = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFAYg==</auth>"


def test_restart_with_pipelined_bytes(tokenizer_impl):
    """<auth/>, the new header (XML declaration included) and an <iq/> in one chunk: the old
    stream chokes on the declaration after the <auth/> event; restart() re-reads the rest."""
    tok = tokenizer_impl.Tokenizer()
    assert tok.feed(HEADER) == [OPEN]
    with pytest.raises(TokenizerError) as info:
        tok.feed(AUTH + HEADER + b"<iq id='b'/>")
    assert [e.name for e in info.value.events] == ["auth"]
    assert tok.restart() == [OPEN, Element("iq", C, {"id": "b"})]
    assert tok.feed(b"<iq id='c'/>") == [Element("iq", C, {"id": "c"})]


def test_restart_with_pipelined_header_without_declaration(tokenizer_impl):
    header = HEADER[HEADER.index(b"?>") + 2 :]
    tok = tokenizer_impl.Tokenizer()
    tok.feed(header)
    events = tok.feed(AUTH + header + b"<iq id='b'/>")
    assert [e.name for e in events] == ["auth"]
    assert tok.buffered == len(header + b"<iq id='b'/>")
    assert tok.restart() == [OPEN, Element("iq", C, {"id": "b"})]


def test_restart_rereads_unconsumed_bytes(tokenizer_impl):
    tok = tokenizer_impl.Tokenizer()
    tok.feed(HEADER)
    # Bytes after the <success/> event are held back: restart() re-reads them.
    tok.feed(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert tok.restart() == []
    assert tok.feed(HEADER + b"<iq id='x'/>") == [OPEN, Element("iq", C, {"id": "x"})]


def test_reset_drops_buffered_bytes(tokenizer_impl):
    tok = tokenizer_impl.Tokenizer()
    tok.feed(HEADER)
    assert tok.feed(b"<iq id='injected'") == []
    tok.reset()
    assert tok.buffered == 0
    assert tok.feed(HEADER + b"<iq id='ok'/>") == [OPEN, Element("iq", C, {"id": "ok"})]


def test_stream_close_then_restart(tokenizer_impl):
    tok = tokenizer_impl.Tokenizer()
    assert tok.feed(HEADER + b"</stream:stream>") == [OPEN, StreamClose()]
    assert tok.restart() == []
    assert tok.feed(HEADER) == [OPEN]


# -- whitespace after the element at the restart point ----------------------------------------
# Clients like go-xmpp end every element with a newline: "</auth>\n".  That whitespace is
# the old stream's; restart() drops it, so the new header's XML declaration comes first.

RESPONSE = b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdz</response>"
SUCCESS = b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
HEADER_NO_DECL = HEADER[HEADER.index(b"?>") + 2 :]
WS_TAILS = [b"\n", b"\r\n", b" ", b"\t", b" \r\n\t \n"]


@pytest.mark.parametrize("ws", WS_TAILS)
@pytest.mark.parametrize("element", [AUTH, RESPONSE, SUCCESS], ids=["auth", "response", "success"])
@pytest.mark.parametrize("split", ["one-chunk", "later-feed", "bytewise"])
def test_restart_drops_whitespace_after_the_element(tokenizer_impl, ws, element, split):
    tok = tokenizer_impl.Tokenizer()
    assert tok.feed(HEADER) == [OPEN]
    if split == "one-chunk":
        chunks = [element + ws]
    elif split == "later-feed":
        chunks = [element, ws]
    else:
        chunks = bytewise(element + ws)
    assert [e.name for e in feed_all(tok, chunks)] == [element[1:].split(b" ")[0].decode()]
    assert tok.buffered == len(ws)
    assert tok.restart() == []
    assert tok.buffered == 0
    assert tok.feed(HEADER + b"<iq id='b'/>\n") == [OPEN, Element("iq", C, {"id": "b"})]


@pytest.mark.parametrize("header", [HEADER, HEADER_NO_DECL], ids=["decl", "no-decl"])
@pytest.mark.parametrize("ws", [b"", *WS_TAILS])
def test_restart_whitespace_then_pipelined_header(tokenizer_impl, header, ws):
    """"</auth>\n<?xml ...?><stream:stream ...>" in one chunk, and in two at every point with
    restart() between them: the whitespace fed before restart() is dropped, the pipelined
    header and stanza are the new stream's.  Whitespace fed after restart() is the new
    stream's: before the XML declaration it is not-well-formed."""
    data = AUTH + ws + header + b"<iq id='b'/>"
    for cut in range(len(data) + 1):
        tok = tokenizer_impl.Tokenizer()
        tok.feed(HEADER)
        events: list = []
        try:
            events += feed_all(tok, [data[:cut]])
        except TokenizerError as exc:  # the declaration, inside the old stream
            assert header is HEADER and exc.condition == "not-well-formed"
            events += exc.events
        assert [e.name for e in events] == (["auth"] if cut >= len(AUTH) else [])
        if cut < len(AUTH):
            continue  # no restart point yet
        after = tok.restart()
        if header is HEADER and cut < len(AUTH + ws):
            with pytest.raises(TokenizerError) as info:
                tok.feed(data[cut:])
            assert (info.value.condition, info.value.events) == ("not-well-formed", []), cut
            continue
        after += feed_all(tok, [data[cut:]])
        assert after == [OPEN, Element("iq", C, {"id": "b"})], cut


def test_whitespace_fed_after_restart_is_the_new_streams(tokenizer_impl):
    # before an XML declaration it is an error, as in any XML document
    tok = tokenizer_impl.Tokenizer()
    tok.feed(HEADER + AUTH + b"\n")
    assert tok.restart() == []
    with pytest.raises(TokenizerError) as info:
        tok.feed(b"\n" + HEADER)
    assert info.value.condition == "not-well-formed"
    # before a header without one it is fine
    tok = tokenizer_impl.Tokenizer()
    tok.feed(HEADER + AUTH + b"\n")
    assert tok.restart() == []
    assert tok.feed(b"\n") == []
    assert tok.buffered == 1
    assert tok.feed(HEADER_NO_DECL) == [OPEN]


def test_restart_keeps_whitespace_when_the_old_stream_had_no_event(tokenizer_impl):
    """The rule is about whitespace after the restart point's element: a second restart()
    before the new stream produced anything re-reads its whitespace (the new stream's)."""
    tok = tokenizer_impl.Tokenizer()
    tok.feed(HEADER + AUTH)
    assert tok.restart() == []
    assert tok.feed(b"\n") == []
    assert tok.restart() == []
    assert tok.buffered == 1
    with pytest.raises(TokenizerError) as info:
        tok.feed(HEADER)
    assert info.value.condition == "not-well-formed"


@pytest.mark.parametrize("junk", [b"\nx", b" \x0c", b"\n\xc2\xa0", b"\n<!-- c -->"])
def test_restart_drops_only_whitespace(tokenizer_impl, junk):
    """Text after the element is an error in the old stream and, re-read, in the new one;
    only XML whitespace (space, tab, CR, LF) is dropped."""
    tok = tokenizer_impl.Tokenizer()
    tok.feed(HEADER)
    with pytest.raises(TokenizerError) as info:
        tok.feed(AUTH + junk + HEADER)
    assert [e.name for e in info.value.events] == ["auth"]
    with pytest.raises(TokenizerError) as again:
        tok.restart()
    assert again.value.condition in ("not-well-formed", "restricted-xml")


def test_stream_close_whitespace_then_restart(tokenizer_impl):
    tok = tokenizer_impl.Tokenizer()
    assert tok.feed(HEADER + b"</stream:stream>\r\n") == [OPEN, StreamClose()]
    assert tok.restart() == []
    assert tok.buffered == 0
    assert tok.feed(HEADER) == [OPEN]


# -- violations -----------------------------------------------------------------------------

VIOLATIONS = [
    ("doctype", b"<!DOCTYPE foo [<!ENTITY x 'y'>]>" + HEADER, "restricted-xml"),
    ("comment", HEADER + b"<message><!-- hi --></message>", "restricted-xml"),
    ("comment-prolog", b"<!-- hi -->" + HEADER, "restricted-xml"),
    ("pi", HEADER + b"<?foo bar?>", "restricted-xml"),
    ("undefined-entity", HEADER + b"<message><body>&nbsp;</body></message>", "restricted-xml"),
    ("undefined-entity-attr", HEADER + b"<message to='&foo;'/>", "restricted-xml"),
    ("invalid-utf8", HEADER + b"<message><body>\xff</body></message>", "not-well-formed"),
    ("overlong-utf8", HEADER + b"<message><body>\xc0\xbc</body></message>", "not-well-formed"),
    ("overlong-in-name", HEADER + b"<mess\xc0\xa1age/>", "not-well-formed"),
    ("surrogate", HEADER + b"<message><body>\xed\xa0\x80</body></message>", "not-well-formed"),
    ("above-max", HEADER + b"<message><body>\xf4\x90\x80\x80</body></message>", "not-well-formed"),
    ("surrogate-ref", HEADER + b"<message><body>&#xD800;</body></message>", "not-well-formed"),
    ("control-char", HEADER + b"<message><body>\x01</body></message>", "not-well-formed"),
    ("control-ref", HEADER + b"<message><body>&#1;</body></message>", "not-well-formed"),
    ("fffe", HEADER + b"<message><body>\xef\xbf\xbe</body></message>", "not-well-formed"),
    ("encoding-decl", b"<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>", "unsupported-encoding"),
    ("utf16-bom", b"\xfe\xff\x00<", "unsupported-encoding"),
    ("utf16-le", b"<\x00s\x00", "unsupported-encoding"),
    ("nul", b"\x00", "unsupported-encoding"),
    ("unbound-prefix", HEADER + b"<message><foo:bar/></message>", "bad-namespace-prefix"),
    ("unbound-attr-prefix", HEADER + b"<message foo:bar='1'/>", "bad-namespace-prefix"),
    ("undeclare-prefix", HEADER + b"<message xmlns:p=''/>", "bad-namespace-prefix"),
    ("bind-xmlns", HEADER + b"<message xmlns:xmlns='urn:x'/>", "bad-namespace-prefix"),
    ("rebind-xml", HEADER + b"<message xmlns:xml='urn:x'/>", "bad-namespace-prefix"),
    ("duplicate-attr", HEADER + b"<message to='a' to='b'/>", "not-well-formed"),
    ("duplicate-expanded", HEADER + b"<message xmlns:a='u' xmlns:b='u' a:x='1' b:x='2'/>", "not-well-formed"),
    ("ns-whitespace", HEADER + b"<message xmlns='urn: x'/>", "invalid-namespace"),
    ("ns-newline", HEADER + b"<message xmlns:p='urn:&#10;x'/>", "invalid-namespace"),
    ("text-outside-stanza", HEADER + b"hello", "not-well-formed"),
    ("entity-outside-stanza", HEADER + b"&amp;", "not-well-formed"),
    ("mismatched-tag", HEADER + b"<message></presence>", "not-well-formed"),
    ("cdata-end-in-text", HEADER + b"<message>]]></message>", "not-well-formed"),
    ("misplaced-decl", HEADER + b"<?xml version='1.0'?>", "not-well-formed"),
    ("junk-after-close", HEADER + b"</stream:stream><message/>", "not-well-formed"),
    ("comment-after-close", HEADER + b"</stream:stream> <!-- bye -->", "not-well-formed"),
    ("text-after-close", HEADER + b"</stream:stream>x", "not-well-formed"),
    ("second-byte-nul", b"x\x00", "unsupported-encoding"),
    ("pound-name-before-header", b"#s:s", "not-well-formed"),
    ("lt-in-attr", HEADER + b"<message to='<'/>", "not-well-formed"),
]


@pytest.mark.parametrize(("data", "condition"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_violations(tokenizer_impl, data, condition):
    assert error(tokenizer_impl, data).condition == condition


def test_error_carries_earlier_events(tokenizer_impl):
    exc = error(tokenizer_impl, HEADER + b"<presence/><message><!-- x --></message>")
    assert exc.events == [OPEN, Element("presence", C)]


def test_nesting_depth(tokenizer_impl):
    data = HEADER + b"<a>" * 10_000
    exc = error(tokenizer_impl, data)
    assert exc.condition == "policy-violation"
    assert exc.events == [OPEN]
    ok = HEADER + b"<a>" * 3 + b"</a>" * 3
    assert len(parse(tokenizer_impl, ok, max_depth=3)) == 2
    assert error(tokenizer_impl, HEADER + b"<a>" * 4, max_depth=3).condition == "policy-violation"


def test_too_many_attributes(tokenizer_impl):
    attrs = b" ".join(b"a%d='1'" % i for i in range(100_000))
    tok = tokenizer_impl.Tokenizer(max_stanza_size=10_000_000)
    tok.feed(HEADER)
    with pytest.raises(TokenizerError) as info:
        tok.feed(b"<message " + attrs + b"/>")
    assert info.value.condition == "policy-violation"
    # declarations count too; the stream header is held to the same limit
    assert error(tokenizer_impl, b"<s><m a='1' b='2' c='3'/>", max_attrs=2).condition == "policy-violation"
    assert error(tokenizer_impl, b"<s><m a='1' b='2' xmlns='u'/>", max_attrs=2).condition == "policy-violation"
    assert len(parse(tokenizer_impl, b"<s><m a='1' xmlns='u'/>", max_attrs=2)) == 2


def test_huge_attribute_value(tokenizer_impl):
    data = HEADER + b"<message to='" + b"x" * (1 << 20) + b"'/>"
    for step in (len(data), 65536):
        tok = tokenizer_impl.Tokenizer()
        with pytest.raises(TokenizerError) as info:
            for i in range(0, len(data), step):
                tok.feed(data[i : i + step])
        assert info.value.condition == "policy-violation"


def test_stanza_size_limit(tokenizer_impl):
    small = HEADER + b"<message><body>" + b"x" * 100 + b"</body></message>"
    assert len(parse(tokenizer_impl, small, max_stanza_size=4096)) == 2
    big = HEADER + b"<message><body>" + b"x" * 5000 + b"</body></message>"
    assert error(tokenizer_impl, big, max_stanza_size=4096).condition == "policy-violation"
    # the limit counts from the last event, so many small stanzas are fine
    many = HEADER + b"<presence/>" * 1000
    assert len(parse(tokenizer_impl, many, max_stanza_size=200)) == 1001


def test_limit_can_be_raised_after_auth(tokenizer_impl):
    tok = tokenizer_impl.Tokenizer(max_stanza_size=1024)
    tok.feed(HEADER)
    tok.max_stanza_size = 1 << 20
    assert len(tok.feed(b"<message><body>" + b"y" * 5000 + b"</body></message>")) == 1


def test_truncated_multibyte_is_not_an_error_yet(tokenizer_impl):
    tok = tokenizer_impl.Tokenizer()
    tok.feed(HEADER + b"<message><body>\xe2\x82")
    assert tok.feed(b"\xac</body></message>")[0].findtext("body") == "€"


def test_long_tokens_in_small_pieces(tokenizer_impl):
    """Long end tags, references and attribute values split into many pieces (the compiled
    tokenizer resumes them instead of rescanning: linear, however they are split)."""
    pad = b" " * 3000
    data = HEADER + b"<message a='" + b"v" * 3000 + b"'><b>x</b" + pad + b"></message" + pad + b">"
    tok = tokenizer_impl.Tokenizer()
    events = feed_all(tok, [data[i : i + 7] for i in range(0, len(data), 7)])
    assert events[1] == Element("message", C, {"a": "v" * 3000}, [Element("b", C, {}, ["x"])])
    ref = HEADER + b"<message>&" + b"a" * 3000 + b";</message>"
    tok = tokenizer_impl.Tokenizer()
    with pytest.raises(TokenizerError) as info:
        feed_all(tok, [ref[i : i + 5] for i in range(0, len(ref), 5)])
    assert info.value.condition == "restricted-xml"
