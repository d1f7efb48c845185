"""Tags inside a stanza's content (depth 2 and more), where the compiled tokenizer checks a
plain start tag and the end tag of the open element on a path of their own: the same
events and errors as everywhere else, fed whole and byte by byte, for both twins."""

from __future__ import annotations

import pytest
from test_tokenizer import HEADER, OPEN, C, error, parse

from xmppd.xml.element import Element


def _stanza(inner: bytes) -> bytes:
    """``inner`` two levels down in a stanza, after a plain sibling."""
    return HEADER + b"<message><x xmlns='urn:x' a='1'/><body>" + inner + b"</body></message>"


INNER_VIOLATIONS = [
    ("duplicate-attr", b"<a b='1' b='2'/>", "not-well-formed"),
    ("duplicate-after-decl", b"<a xmlns='urn:a' b='1' c='2' b='3'></a>", "not-well-formed"),
    ("bad-ref-in-value", b"<a b='&foo;'/>", "restricted-xml"),
    ("forbidden-char-ref", b"<a b='&#0;'/>", "not-well-formed"),
    ("default-ns-whitespace", b"<a xmlns='urn: a'/>", "invalid-namespace"),
    ("default-ns-xml", b"<a xmlns='http://www.w3.org/XML/1998/namespace'/>", "bad-namespace-prefix"),
    ("default-ns-xmlns", b"<a xmlns='http://www.w3.org/2000/xmlns/'/>", "bad-namespace-prefix"),
    ("mismatched-end", b"<a><b></a></b>", "not-well-formed"),
    ("end-prefix-of-name", b"<ab></a>", "not-well-formed"),
    ("end-longer-name", b"<a></ab>", "not-well-formed"),
    ("end-junk", b"<a></a x>", "not-well-formed"),
    ("unbound-after-plain", b"<a><p:b/></a>", "bad-namespace-prefix"),
]


@pytest.mark.parametrize(("inner", "condition"), [v[1:] for v in INNER_VIOLATIONS],
                         ids=[v[0] for v in INNER_VIOLATIONS])
def test_inner_violations(tokenizer_impl, inner, condition):
    exc = error(tokenizer_impl, _stanza(inner))
    assert exc.condition == condition
    assert exc.events == [OPEN]


def test_inner_limits(tokenizer_impl):
    many = b"<a " + b" ".join(b"a%d='1'" % i for i in range(5)) + b"/>"
    assert error(tokenizer_impl, _stanza(many), max_attrs=4).condition == "policy-violation"
    assert len(parse(tokenizer_impl, _stanza(many), max_attrs=5)) == 2
    deep = b"<a>" * 3 + b"</a>" * 3
    assert error(tokenizer_impl, _stanza(deep), max_depth=4).condition == "policy-violation"
    assert len(parse(tokenizer_impl, _stanza(deep), max_depth=5)) == 2


def test_inner_tags_build_the_same_tree(tokenizer_impl):
    inner = (
        b"<a xmlns='urn:a' k='v&amp;w' n='&#x4E2D;'><b/><b ></b ><c\txmlns='urn:c'\n"
        b"/>t\xc3\xa9xt</a><a:x xmlns:a='urn:p' a:k='1'><y/></a:x>"
    )
    events = parse(tokenizer_impl, _stanza(inner))
    body = events[1].children[1]
    a, ax = body.children
    assert (a.name, a.ns, a.attrs) == ("a", "urn:a", {"k": "v&w", "n": "\u4e2d"})
    assert a.children == [Element("b", "urn:a"), Element("b", "urn:a"), Element("c", "urn:c"), "t\u00e9xt"]
    assert (ax.name, ax.ns, ax.attrs) == ("x", "urn:p", {"{urn:p}k": "1"})
    assert ax.children == [Element("y", C)]
