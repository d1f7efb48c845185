"""``Element.carries``: whether a stanza has a direct child in some namespaces, answered from
the validated bytes when the compiled tokenizer kept them.  The router skips module hooks on
its False, so it must never be False where the tree has such a child (a True too many only
costs the hooks' run).  Differential: the pure twin's tree is the answer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import twins
from test_tokenizer_lazy import nested, parse

pure, compiled = twins("tokenizer")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CANDIDATES = ("urn:d0", "urn:d1", "urn:p1:0", "urn:stream-level", "urn:q", "urn:c:2",
              "jabber:client")
# How a child in urn:c:2 may be written: literally, through a character reference, with a
# prefix declared on the stanza or on the stream header ("s" is urn:stream-level there).
CHILDREN = st.sampled_from([
    "<x xmlns='urn:c:2'/>", "<x xmlns='urn&#58;c:2'/>", "<x xmlns='urn:c&#x3A;2'>t</x>",
    "<q:x/>", "<s:x/>", "<body>urn:c:2</body>", "<y xmlns='urn:d0'><x xmlns='urn:c:2'/></y>",
    "<body>a &amp; b</body>", "<![CDATA[<x xmlns='urn:c:2'/>]]>", "<body>a=b</body>",
    "<x a='1'/>", "<body/>",
])


def exact(el, namespaces: frozenset[str]) -> bool:
    return any(kid.ns in namespaces for kid in el.elements())


def carries(el, namespaces: frozenset[str]) -> bool:
    return el.carries(namespaces, tuple(ns.encode() for ns in namespaces))


@st.composite
def stanzas(draw) -> bytes:
    decl = draw(st.sampled_from([" xmlns:q='urn:c:2'", " xmlns:q='urn:q'"]))
    kids = "".join(draw(st.lists(st.one_of(CHILDREN, nested(1)), max_size=4)))
    return f"<message id='m'{decl}>{kids}</message>".encode()


@SETTINGS
@given(stanzas(), st.sets(st.sampled_from(CANDIDATES), min_size=1, max_size=2))
def test_never_false_where_the_tree_has_one(data, chosen):
    namespaces = frozenset(chosen)
    truth = exact(parse(pure, data), namespaces)
    # the pure twin asks the tree (its own namespace, which children inherit without a
    # trace in the bytes, always counts)
    assert carries(parse(pure, data), namespaces) == (truth or "jabber:client" in namespaces)
    if compiled is not None:
        el = parse(compiled, data)
        assert carries(el, namespaces) or not truth, data
        assert exact(el, namespaces) == truth


@pytest.mark.skipif(compiled is None, reason="compiled tokenizer not built")
def test_answered_from_the_bytes_without_building_children():
    el = parse(compiled, b"<message to='b@x/r'><body>hi</body><x xmlns='urn:c:2'/></message>")
    assert carries(el, frozenset({"urn:c:2"})) and not carries(el, frozenset({"urn:d0"}))
    assert el._children is None  # nothing was built
    plain = parse(compiled, b"<message><body>no attribute, no declaration</body></message>")
    assert not carries(plain, frozenset({"urn:c:2"})) and plain._children is None
    referenced = parse(compiled, b"<message><x xmlns='urn&#58;c:2'/></message>")
    assert carries(referenced, frozenset({"urn:c:2"}))
    changed = parse(compiled, b"<message><body>hi</body></message>")
    changed.children.append(parse(compiled, b"<x xmlns='urn:c:2'/>"))  # drops the bytes
    assert carries(changed, frozenset({"urn:c:2"}))

