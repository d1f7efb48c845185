"""The element model and its serializer, and the security invariant: whatever ``to_bytes``
writes (the raw-forwarding path of lazily built elements included) parses, with the pyexpat
tokenizer and with lxml, to exactly the tree the tokenizer produced."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from test_tokenizer_differential import streams

from xmppd.xml import _tokenizer_pure as pure
from xmppd.xml.element import XML_LANG, Element, escape_attr, escape_text

C = "jabber:client"
HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def reparse(data: bytes, default_ns: str = C) -> Element:
    """The single element in ``data``, read by the pure tokenizer inside a stream whose
    default namespace is ``default_ns``."""
    header = b"<s:s xmlns:s='urn:s' xmlns='" + escape_attr(default_ns).encode() + b"'>"
    events = pure.Tokenizer().feed(header + data + b"</s:s>")
    assert len(events) == 3, events
    return events[1]


def from_lxml(el) -> Element:
    qname = etree.QName(el)
    kids: list = []

    def add_text(text: str | None) -> None:
        if text:
            if kids and isinstance(kids[-1], str):
                kids[-1] += text
            else:
                kids.append(text)

    add_text(el.text)
    for child in el:
        kids.append(from_lxml(child))
        add_text(child.tail)
    return Element(qname.localname, qname.namespace or "", dict(el.attrib), kids)


def lxml_reparse(data: bytes, default_ns: str = C) -> Element | None:
    """The element lxml reads from ``data``; None when libxml2 refuses a namespace name
    that is not a URI (XML Namespaces allows any string; libxml2 is stricter)."""
    wrapper = b"<w xmlns='" + escape_attr(default_ns).encode() + b"'>" + data + b"</w>"
    try:
        return from_lxml(etree.fromstring(wrapper)[0])
    except etree.XMLSyntaxError as exc:
        if "is not a valid URI" in str(exc):
            return None
        raise


# -- the model --------------------------------------------------------------------------


def test_find_and_text():
    body = Element("body", C, {}, ["hi"])
    msg = Element("message", C, {"to": "a@b"}, [body, Element("x", "urn:x")])
    assert msg.find("body") is body
    assert msg.find("x") is None
    assert msg.find("x", "urn:x") == Element("x", "urn:x")
    assert msg.find_ns("urn:x").name == "x"
    assert msg.findtext("body") == "hi"
    assert msg.findtext("nope", default="d") == "d"
    assert msg.findall("body") == [body]
    assert [e.name for e in msg.iter()] == ["message", "body", "x"]
    assert list(msg.elements()) == [body, Element("x", "urn:x")]


def test_append_coalesces_text_and_subelement():
    el = Element("a")
    el.append("x")
    el.append("y")
    el.append("")
    child = el.subelement("b", text="t")
    assert el.children == ["xy", child]
    assert child.ns == "" and child.text == "t"
    el.text = "new"
    assert el.children == ["new", child]
    el.remove(child)
    el.clear_children()
    assert el.children == []


def test_attributes_and_equality():
    el = Element("a", "u", {"k": "v"})
    el.set("k", None)
    el.set("j", "w")
    assert el.get("j") == "w" and el.get("k") is None
    assert el == Element("a", "u", {"j": "w"})
    assert el != Element("a", "v", {"j": "w"})
    assert el != Element("a", "u", {"j": "w"}, ["t"])
    assert (el == "a") is False


def test_lazy_children_and_copy():
    calls = []

    def lazy():
        calls.append(1)
        return [Element("b", "u")]

    el = Element("a", "u", {}, None, lazy=lazy, raw_inner=b"<b/>", raw_ns="u")
    assert el == Element("a", "u", {}, [Element("b", "u")])
    assert el.find("b") is not None and len(calls) == 1
    assert el._raw_inner == b"<b/>"  # reading keeps the raw form
    dup = el.copy()
    assert dup == el and dup._raw_inner == b"<b/>"
    el.append("t")  # mutating drops it
    assert el._raw_inner is None
    assert el.to_bytes("u") == b"<a><b/>t</a>"


def test_serializer_escapes():
    el = Element(
        "message", C,
        {"to": 'a"b<c>&d\te\nf\rg', XML_LANG: "en", "{urn:p}x": "1"},
        ["]]> & <tag> \r\n é 😀"],
    )
    data = el.to_bytes(C)
    assert b"&quot;" in data and b"&#9;" in data and b"&#10;" in data and b"&#13;" in data
    assert b"]]&gt;" in data and b"xml:lang='en'" not in data
    assert reparse(data) == el
    assert lxml_reparse(data) == el
    assert escape_text("a\rb") == "a&#13;b"
    assert escape_attr("\t") == "&#9;"


def test_remembered_attribute_text_is_the_escaped_text():
    """``to``/``from``/``type`` texts are remembered by value: the second serialization of a
    value needing escapes is escaped as the first, and a full table starts afresh."""
    from xmppd.xml import element as module

    odd = 'x"y<z>&@example.org/r\t1'
    first = Element("message", C, {"to": odd, "type": "chat"}).to_bytes(C)
    again = Element("message", C, {"from": odd, "to": odd}).to_bytes(C)
    assert b"&quot;" in first and b"&#9;" in first
    assert reparse(first).attrs["to"] == odd
    assert reparse(again).attrs == {"from": odd, "to": odd}
    table = module._FRAGMENTS["to"]
    for i in range(module._MAX_FRAGMENTS + 1):
        Element("iq", C, {"to": f"u{i}@example.org"}).to_bytes(C)
    assert 0 < len(table) <= module._MAX_FRAGMENTS
    assert Element("iq", C, {"to": odd}).to_bytes(C) == b'<iq to="' + \
        escape_attr(odd).encode() + b'"/>'


def test_namespace_declared_when_it_differs():
    el = Element("query", "jabber:iq:roster", {}, [Element("item", "jabber:iq:roster")])
    assert el.to_bytes(C) == b'<query xmlns="jabber:iq:roster"><item/></query>'
    assert el.to_bytes("jabber:iq:roster") == b"<query><item/></query>"
    assert Element("x", "").to_bytes(C) == b'<x xmlns=""/>'


# -- raw forwarding of lazily built elements ------------------------------------------


def _compiled():
    try:
        return importlib.import_module("xmppd._speedups.tokenizer")
    except ImportError:
        pytest.skip("compiled tokenizer not built")


def test_raw_forwarding_with_rewritten_attributes():
    tok = _compiled().Tokenizer()
    data = (
        b"<message to='a@b' id='1'><body>hi &amp; &#x263A; <![CDATA[<x>]]></body>"
        b"<x xmlns='urn:x' xmlns:p='urn:p' p:a='1'><p:y/></x></message>"
    )
    (_, msg) = tok.feed(HEADER + data)
    assert msg._raw_inner is not None and msg._children is None  # lazy until read
    msg.set("from", "evil'\"<>&\r\n\t@x")
    msg.set("to", "c@d")
    out = msg.to_bytes(C)
    assert out.startswith(b"<message") and data[data.index(b"<body>"):] in out
    assert reparse(out) == msg
    assert lxml_reparse(out) == msg
    # the same element written into a stream with another default namespace
    assert reparse(msg.to_bytes("urn:other"), "urn:other") == msg


def test_append_forwardable_keeps_the_raw_form():
    tok = _compiled().Tokenizer()
    (_, msg) = tok.feed(HEADER + b"<message to='a@b'><body>hi &amp; <![CDATA[<x>]]></body></message>")
    sid = Element("stanza-id", "urn:xmpp:sid:0", {"by": "a@b", "id": "x'1"})
    assert msg.append_forwardable(sid) is sid
    assert msg._raw_inner is not None and list(msg.elements())[-1] is sid
    out = msg.to_bytes(C)
    assert b"<![CDATA[<x>]]>" in out  # the content as received, not serialized again
    assert reparse(out) == msg and lxml_reparse(out) == msg
    assert reparse(msg.to_bytes("urn:other"), "urn:other") == msg
    empty = Element("message", C, {}, None, raw_inner=b"", raw_ns=C)  # <message/>
    empty.append_forwardable(Element("x", "urn:x"))
    assert reparse(empty.to_bytes(C)) == Element("message", C, {}, [Element("x", "urn:x")])
    (msg,) = tok.feed(b"<message><body>lazy</body></message>")
    assert msg._children is None
    msg.append_forwardable(sid, b"<stanza-id xmlns='urn:xmpp:sid:0' by='a@b' id='x&apos;1'/>")
    assert msg._children is None  # the content is still not built
    assert reparse(msg.to_bytes(C)) == msg and list(msg.elements())[-1] is sid
    assert [e.name for e in msg.elements()] == ["body", "stanza-id"]
    plain = Element("message", C, {}, [])  # no raw form: nothing to keep
    plain.append_forwardable(Element("x", "urn:x"))
    assert plain._raw_inner is None and plain.children == [Element("x", "urn:x")]


def test_borrowed_prefix_is_not_forwarded_raw():
    tok = _compiled().Tokenizer()
    (_, msg) = tok.feed(HEADER + b"<message><stream:x/></message>")
    assert msg._raw_inner is None  # uses the header's prefix: not self-contained
    assert reparse(msg.to_bytes(C)) == msg
    (msg,) = tok.feed(b"<message xmlns:p='urn:p'><p:y/></message>")
    assert msg._raw_inner is None
    assert reparse(msg.to_bytes(C)) == msg


def test_prefixed_stanza_is_reserialized():
    tok = _compiled().Tokenizer()
    (_, el) = tok.feed(HEADER + b"<p:x xmlns:p='urn:p'><y/></p:x>")
    assert el.ns == "urn:p" and el.children == [Element("y", C)]
    out = el.to_bytes(C)
    assert reparse(out) == el and lxml_reparse(out) == el


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams(),
    st.sampled_from([None, "", "x@y/z", "'\"<>&\r\n\t]]>", "é😀"]),
    st.sampled_from([C, "urn:other", ""]),
)
def test_serialization_round_trips(data, new_from, default_ns):
    """Random stanzas from both tokenizers, attributes rewritten or not, written into a
    stream with some default namespace, reparse to equal trees with pyexpat and lxml."""
    modules = [pure]
    try:
        modules.append(importlib.import_module("xmppd._speedups.tokenizer"))
    except ImportError:  # pragma: no cover
        pass
    for mod in modules:
        for el in mod.Tokenizer().feed(data):
            if not isinstance(el, Element):
                continue
            if new_from is not None:
                el.set("from", new_from)
            out = el.to_bytes(default_ns)
            assert reparse(out, default_ns) == el, out
            assert lxml_reparse(out, default_ns) in (el, None), out


# -- bytes kept from a peer worker (keep_wire) ----------------------------------------------


def test_kept_bytes_are_written_while_the_element_is_unchanged():
    tok = _compiled().Tokenizer()
    sent = b'<message to="b@x/r" type="chat" from="a@x/r"><body>hi</body></message>'
    (_, msg) = tok.feed(HEADER + sent)
    kept = b'<message to="b@x/r" type="chat" from="a@x/r"><body>hi</body></message>'
    msg.keep_wire(kept, C)
    assert msg.to_bytes(C) is kept
    assert msg.to_bytes("urn:other") != kept  # another stream's default namespace
    msg.set("id", "1")  # a hook that changes an attribute
    assert msg.to_bytes(C) == sent[:-len("><body>hi</body></message>")] + b' id="1"><body>hi</body></message>'
    msg.keep_wire(kept, C)
    msg.name = "presence"
    assert msg.to_bytes(C).startswith(b"<presence ")
    msg.name = "message"
    assert msg.to_bytes(C) is kept
    msg.append_forwardable(Element("x", "urn:x"))  # the content changes
    assert msg.to_bytes(C).endswith(b'<x xmlns="urn:x"/></message>')
    msg.keep_wire(kept, C)
    msg.children.append("more")
    assert msg.to_bytes(C) == b'<message to="b@x/r" type="chat" from="a@x/r" id="1">' \
        b'<body>hi</body><x xmlns="urn:x"/>more</message>'
    msg.keep_wire(kept, C)  # no tokenizer content any more: nothing kept
    assert msg.to_bytes(C).endswith(b"more</message>")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([None, "x@y/z", "'\"<>&\r\n\t]]>", "é😀"]))
def test_a_peer_s_bytes_say_what_the_recipient_would_get(data, new_from):
    """What makes :meth:`Element.keep_wire` sound: the bytes one worker sends (``to_bytes``
    under ``jabber:client``) mean exactly the element its peer's tokenizer reads from
    them, so writing them to the recipient instead of serializing that element again
    changes nothing but, at most, the order of qualified attributes (which the sender
    kept: a single process would have written these very bytes)."""
    compiled = _compiled()
    receiver = compiled.Tokenizer()
    receiver.feed(HEADER)
    for mod in (pure, compiled):
        for el in mod.Tokenizer().feed(data):
            if not isinstance(el, Element):
                continue
            if new_from is not None:
                el.set("from", new_from)
            sent = el.to_bytes(C)
            (got,) = receiver.feed(sent)
            assert got == el and reparse(sent) == got
            if not any(key[0] == "{" for key in got.attrs):
                assert got.to_bytes(C) == sent
            got.keep_wire(sent, C)
            if got._raw_inner is not None and got._raw_ns == got.ns:
                assert got.to_bytes(C) is sent
            assert reparse(got.to_bytes(C)) == el
