"""Differential tests of lazily built nested elements: the compiled tokenizer keeps a nested
element whose content holds elements (and is long enough) unbuilt until touched.

Stanzas with deep, long content (prefixes declared at every level, default namespace
changes, CDATA sections holding markup, ``>`` and ``/`` in attribute values) are parsed by
both implementations; the trees must then answer every sequence of reads, mutations and
serializations the same way, whatever the order in which their parts are touched.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import twins

from xmppd.xml.element import Element

pure, compiled = twins("tokenizer")

pytestmark = pytest.mark.skipif(compiled is None, reason="compiled tokenizer not built")

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    b"xmlns:s='urn:stream-level' to='example.com' version='1.0'>"
)
PAD = "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 3  # > the lazy threshold
TEXTS = st.sampled_from(
    ["", "x", PAD, "caf\u00e9 \u65e5\u672c", "a &amp; b &lt;c&gt;", "\r\n", "<![CDATA[<a x='>'/>]]>",
     "<![CDATA[]]]>", "&#x1F600;" + PAD]
)
VALUES = st.sampled_from(["v", "a>b", "/>", "x/", "&apos;&quot;", PAD, "\u00e9\t\n"])


@st.composite
def nested(draw, depth: int = 0, prefixes: tuple[str, ...] = ("s",)) -> str:
    """An element; prefixes declared here or above are used below."""
    decls = ""
    if draw(st.integers(0, 3)) == 0:
        decls += f" xmlns='urn:d{draw(st.integers(0, 2))}'"
    if draw(st.integers(0, 2)) == 0:
        new = f"p{depth}"
        decls += f" xmlns:{new}='urn:p{depth}:{draw(st.integers(0, 1))}'"
        prefixes = (*prefixes, new)
    prefix = draw(st.sampled_from(["", "", *prefixes]))
    qname = f"{prefix}:e{depth}" if prefix else f"e{depth}"
    attrs = ""
    for k in range(draw(st.integers(0, 2))):
        aprefix = draw(st.sampled_from(["", "", "xml", *prefixes]))
        name = f"{aprefix}:a{k}" if aprefix else f"a{k}"
        attrs += f" {name}='{draw(VALUES)}'"
    if depth >= 4 or draw(st.integers(0, 4)) == 0:
        return f"<{qname}{decls}{attrs}/>"
    content = ""
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            content += draw(TEXTS)
        else:
            content += draw(nested(depth + 1, prefixes))
    return f"<{qname}{decls}{attrs}>{content}</{qname}>"


@st.composite
def stanzas(draw) -> bytes:
    body = draw(nested(1))
    decl = draw(st.sampled_from(["", " xmlns:q='urn:q'"]))
    return f"<message id='m'{decl}>{body}{PAD}</message>".encode()


def parse(mod, data: bytes) -> Element:
    events = mod.Tokenizer().feed(HEADER + data)
    assert len(events) == 2, events
    return events[1]


def reparse(data: bytes) -> Element:
    """A serialization read back (the compiled tree may reuse its validated bytes, so the
    bytes may differ from the twin's; what they mean may not)."""
    return parse(pure, data)


def paths(el: Element, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every element's path (indexes among child elements) below ``el``."""
    out = [prefix]
    for k, kid in enumerate(el.elements()):
        out.extend(paths(kid, (*prefix, k)))
    return out


def at(el: Element, path: tuple[int, ...], mutate: bool) -> Element:
    """The element at ``path``; for a mutation through ``children`` all the way down, as
    the Element contract asks (reading keeps an element's raw bytes, mutating through
    ``children`` drops them: an ancestor must not be serialized from stale bytes)."""
    for k in path:
        kids = el.children if mutate else el._kids()
        el = [kid for kid in kids if isinstance(kid, Element)][k]
    return el


OPS = ["children", "find", "text", "iter", "to_bytes", "str", "append", "remove", "set_text",
       "copy", "eq", "attrs"]
MUTATIONS = {"children", "append", "remove", "set_text"}


def apply(root: Element, op: str, path: tuple[int, ...]):
    """One operation on the element at ``path``; its observable result."""
    el = at(root, path, op in MUTATIONS)
    if op == "children":
        return [k if isinstance(k, str) else (k.name, k.ns, k.attrs) for k in el.children]
    if op == "find":
        return [(k.name, k.ns) for k in el.elements()], el.find("e2", "urn:d1") is None
    if op == "text":
        return el.text
    if op == "iter":
        return [(k.name, k.ns, sorted(k.attrs.items())) for k in el.iter()]
    if op == "to_bytes":
        return reparse(el.to_bytes("jabber:client")), reparse(root.to_bytes("jabber:client"))
    if op == "str":
        return reparse(str(el).encode())
    if op == "append":
        el.append(Element("added", "urn:added", {"k": "v>"}))
        return None
    if op == "remove":
        kids = [k for k in el.children if isinstance(k, Element)]
        if kids:
            el.remove(kids[-1])
        return None
    if op == "set_text":
        el.text = "new <text>"
        return None
    if op == "copy":
        return el.copy() == el
    if op == "eq":
        return el
    return el.attrs


@SETTINGS
@given(stanzas(), st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10_000)), max_size=8))
def test_touched_in_any_order(data, ops):
    expected_tree = parse(pure, data)
    tree = parse(compiled, data)
    reference = parse(pure, data)  # built in full, never mutated: where paths come from
    for op, pick in ops:
        options = paths(reference)
        path = options[pick % len(options)]
        # A mutation may remove the element at a path: both trees then fail the same way.
        try:
            expected = ("ok", apply(expected_tree, op, path))
        except (IndexError, AttributeError) as exc:
            expected = ("error", type(exc))
        try:
            got = ("ok", apply(tree, op, path))
        except (IndexError, AttributeError) as exc:
            got = ("error", type(exc))
        assert got == expected, (op, path)
    assert tree == expected_tree
    assert reparse(tree.to_bytes("jabber:client")) == reparse(expected_tree.to_bytes("jabber:client"))


@SETTINGS
@given(stanzas(), st.lists(st.integers(0, 10_000), max_size=6))
def test_split_feeds(data, cuts):
    stream = HEADER + data
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    tok = compiled.Tokenizer()
    events = [e for chunk in chunks for e in tok.feed(chunk)]
    assert events == pure.Tokenizer().feed(stream)


def test_nested_elements_are_lazy():
    """Not vacuous: a long nested element stays unbuilt until touched, and then builds the
    same tree as the twin (prefixes declared on the lazy element and above it)."""
    inner = f"<c xmlns:p='urn:p'><p:d p:a='1'>{PAD}</p:d><s:e>{PAD}</s:e><![CDATA[<x>]]></c>"
    data = f"<message><a xmlns='urn:a'><b>{inner}</b>{PAD}</a></message>".encode()
    el = parse(compiled, data)
    a = el.children[0]
    assert a._children is None and a._lazy is not None  # the child list is not built yet
    b = a.children[0]
    assert b._children is None and b._lazy is not None
    assert el == parse(pure, data)
    assert reparse(el.to_bytes("jabber:client")) == parse(pure, data)
