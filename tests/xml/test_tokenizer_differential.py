"""Differential tests: the compiled tokenizer against the pyexpat twin (the specification).

Random well-formed XMPP-like streams and mutated (malformed) ones are fed to both
implementations in random pieces; the events and the error condition must be identical,
and identical to feeding the whole input at once.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import twins

from xmppd.xml.events import TokenizerError

pure, compiled = twins("tokenizer")

pytestmark = pytest.mark.skipif(compiled is None, reason="compiled tokenizer not built")

SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"
)

# -- well-formed documents --------------------------------------------------------------

NAMES = st.sampled_from(["a", "body", "x", "query", "item", "é", "ns-1.b", "中文", "_u", "Ab9"])
URIS = st.sampled_from(
    ["urn:a", "urn:b", "jabber:client", "http://jabber.org/protocol/caps", "urn:x:é", "u&amp;v"]
)
TEXT_PIECES = st.sampled_from(
    [
        "hello", " ", "\n", "\r\n", "\r", "\t", "&amp;", "&lt;", "&gt;", "&quot;", "&apos;",
        "&#65;", "&#x263A;", "&#x1F600;", "&#13;", "&#10;", "é", "😀", "日本", ">", "]", "]]",
        "'", '"', "<![CDATA[x<&]]>", "<![CDATA[]]]>", "<![CDATA[a]]]]>", "<![CDATA[\r\n]]>",
    ]
)
ATTR_PIECES = st.sampled_from(
    ["v", " ", "\t", "\n", "\r\n", "\r", "&amp;", "&lt;", "&#9;", "&#10;", "&#13;", "&#x20;",
     "é", "😀", ">", "'", "&quot;", "]]>"]
)


@st.composite
def texts(draw) -> str:
    text = ""
    for piece in draw(st.lists(TEXT_PIECES, max_size=5)):
        if piece == ">" and text.endswith("]]"):
            piece = "&gt;"  # "]]>" is not allowed in text
        text += piece
    return text


@st.composite
def attr_values(draw, quote: str) -> str:
    value = "".join(draw(st.lists(ATTR_PIECES, max_size=4)))
    return value.replace(quote, "&apos;" if quote == "'" else "&quot;")


@st.composite
def elements(draw, depth: int = 0) -> str:
    """An element with its own declarations for every prefix it uses (sometimes the
    stream's ``stream:`` prefix, declared on the header, to exercise borrowed prefixes)."""
    name = draw(NAMES)
    decls: list[str] = []
    prefix = draw(st.sampled_from(["", "", "", "p", "stream"]))
    if prefix == "p":
        decls.append(f" xmlns:p='{draw(URIS)}'")
    if draw(st.booleans()):
        decls.append(f" xmlns='{draw(URIS)}'")
    qname = f"{prefix}:{name}" if prefix else name
    attrs: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 3))):
        aname = draw(st.sampled_from(["id", "to", "type", "q:n", "xml:lang", "é", "a-b"]))
        if aname.startswith("q:") and " xmlns:q=" not in "".join(decls):
            decls.append(f" xmlns:q='{draw(URIS)}'")
        quote = draw(st.sampled_from(["'", '"']))
        attrs[aname] = f"{quote}{draw(attr_values(quote))}{quote}"
    ws = draw(st.sampled_from(["", " ", "\n"]))
    start = f"<{qname}{''.join(decls)}" + "".join(f" {k}={v}" for k, v in attrs.items())
    if depth >= 3 or draw(st.integers(0, 3)) == 0:
        return start + ws + "/>"
    kids = []
    last_text = False
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            text = draw(texts())
            if last_text and kids[-1].endswith("]") and text.startswith(("]", ">")):
                text = "x" + text  # two text runs side by side must not spell "]]>"
            kids.append(text)
            last_text = True
        else:
            kids.append(draw(elements(depth + 1)))
            last_text = False
    return f"{start}{ws}>{''.join(kids)}</{qname}{ws}>"


@st.composite
def streams(draw) -> bytes:
    parts = [HEADER]
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(st.sampled_from(["", " ", "\n", "\r\n\t"])))
        parts.append(draw(elements(1)))
    if draw(st.booleans()):
        parts.append("</stream:stream>")
    return "".join(parts).encode()


# -- malformed documents ----------------------------------------------------------------

INJECTIONS = [
    b"<", b">", b"&", b";", b"'", b'"', b"=", b"/", b"]", b"]]>", b"!", b"?", b"-", b":",
    b"x", b" ", b"\x00", b"\x0c", b"\x7f", b"\xc0", b"\xc0\x80", b"\xe0\x80\x80",
    b"\xed\xa0\x80", b"\xef\xbf\xbe", b"\xf4\x90\x80\x80", b"\xff", b"\x80", b"\xe2\x82",
    b"<!-- c -->", b"<?pi x?>", b"<?xml version='1.0'?>", b"&foo;", b"&#0;", b"&#xD800;",
    b"&#x110000;", b"<![CDATA[", b"xmlns:p=''", b" a='1' a='2'", b"<u:x/>", b"<a xmlns:xml='urn:x'/>",
    b"<a xmlns='http://www.w3.org/2000/xmlns/'/>", b"<a xmlns:p='a b'/>", b"<!DOCTYPE x>",
    b"</x>", b"text", b"\r\n", b"&amp;", b"<b>", b"</stream:stream>",
]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(streams()))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 4))
        at = draw(st.integers(0, len(data)))
        if kind <= 1:
            data[at:at] = draw(st.sampled_from(INJECTIONS))
        elif kind == 2 and data:
            end = min(len(data), at + draw(st.integers(1, 4)))
            del data[at:end]
        elif kind == 3 and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            del data[at:]
    return bytes(data)


# Token soup: markup fragments anywhere (the prolog, inside the stream, after its end),
# where expat's decisions on incomplete tokens are the subtle part.
SOUP = [
    b"<", b">", b"?", b"!", b"-", b"--", b"[", b"]", b"(", b")", b"%", b"#", b"'", b'"', b"x",
    b"xml", b"XmL", b"DOCTYPE", b" ", b"\n", b"\r", b"=", b"a", b":", b";", b"&", b"&#", b"\xc3\xa9",
    b"\xe2\x82", b"\xff", b"\xef\xbb\xbf", b"version", b"encoding", b"'1.0'", b"'UTF-8'", b"'latin1'",
    b"standalone", b"'yes'", b"<s>", b"</s>", b"<?xml version='1.0'?>", b"<!--", b"-->", b"?>",
    b"<![CDATA[", b"]]>", b"/", b"\x00", b"\t", b"|", b",", b"*", b"1", b"<?xml", b"<!DOCTYPE",
]


@st.composite
def soups(draw) -> bytes:
    prefix = draw(st.sampled_from([b"", b"", b"<s>", b"<s></s>", b"<s><a>"]))
    return prefix + b"".join(draw(st.lists(st.sampled_from(SOUP), min_size=1, max_size=12)))


# -- running ----------------------------------------------------------------------------


def run(mod, chunks: list[bytes], **limits) -> tuple[list, str | None, int | None]:
    """All events, the error condition (or None) and what stays buffered."""
    tok = mod.Tokenizer(**limits)
    events: list = []
    try:
        for chunk in chunks:
            events.extend(tok.feed(chunk))
    except TokenizerError as exc:
        events.extend(exc.events)
        return events, exc.condition, None
    return events, None, tok.buffered


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def check(data: bytes, cuts: list[int], **limits) -> None:
    chunks = split(data, cuts)
    expected = run(pure, [data], **limits)
    assert run(pure, chunks, **limits) == expected, "the pure twin depends on the split"
    assert run(compiled, [data], **limits) == expected
    assert run(compiled, chunks, **limits) == expected


@SETTINGS
@given(streams(), st.lists(st.integers(0, 10_000), max_size=8))
def test_well_formed_streams(data, cuts):
    events, condition, _ = run(pure, [data])
    assert condition is None, (data, condition)
    check(data, cuts)


@SETTINGS
@given(mutated(), st.lists(st.integers(0, 10_000), max_size=8))
def test_mutated_streams(data, cuts):
    check(data, cuts)


@SETTINGS
@given(soups(), st.lists(st.integers(0, 10_000), max_size=4))
def test_token_soup(data, cuts):
    check(data, cuts)


@settings(max_examples=60, deadline=None)
@given(streams())
def test_byte_at_a_time(data):
    check(data, list(range(len(data))))


@SETTINGS
@given(mutated(), st.lists(st.integers(0, 10_000), max_size=4),
       st.sampled_from([64, 200, 1000]), st.sampled_from([1, 2, 64]), st.sampled_from([0, 1, 64]))
def test_limits(data, cuts, size, depth, nattrs):
    check(data, cuts, max_stanza_size=size, max_depth=depth, max_attrs=nattrs)


def script(mod, steps: list[tuple[str, bytes]]) -> list:
    """Run feed/restart/reset steps; the log of events and errors."""
    tok = mod.Tokenizer()
    log: list = []
    for op, data in steps:
        try:
            if op == "feed":
                log.append(tok.feed(data))
            elif op == "restart":
                log.append(tok.restart())
            else:
                log.append(tok.reset())
            log.append(tok.buffered)
        except TokenizerError as exc:
            log.append((exc.condition, exc.events))
    return log


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["feed", "feed", "feed", "restart", "reset"]),
            st.sampled_from(
                [HEADER.encode(), b"<auth xmlns='urn:s'/>", HEADER.encode() + b"<iq id='1'/>",
                 b"<iq id='2'><q xmlns='urn:q'/></iq>", b"<iq id='3'", b"/>", b" ", b"</stream:stream>",
                 b"<success xmlns='urn:s'/>" + HEADER.encode() + b"<iq/>", b"x", b"\r\n",
                 b"<auth xmlns='urn:s'/>\n"]
            ),
        ),
        max_size=8,
    )
)
def test_restart_reset_sequences(steps):
    assert script(compiled, steps) == script(pure, steps)


# -- restart after a SASL element followed by whitespace --------------------------------------

HEADER_NO_DECL = HEADER[HEADER.index("?>") + 2 :]
SASL_ELEMENTS = [
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFAYg==</auth>",
    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdz</response>",
    "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
]
WS = st.text(alphabet=" \t\r\n", max_size=6)


@st.composite
def restart_scripts(draw) -> tuple[bytes, bytes, bytes]:
    """(old stream up to its last element, bytes after it up to restart(), bytes after):
    the element is followed by random whitespace and maybe a pipelined new stream; more
    whitespace, a header (with or without declaration) or a stanza may come later."""
    old = HEADER + draw(st.sampled_from(SASL_ELEMENTS))
    pipelined = draw(st.sampled_from(["", "", HEADER, HEADER_NO_DECL, HEADER + "<iq id='1'/>",
                                      "<iq id='1'/>", "x", "<?xml version='1.0'?>"]))
    later = draw(st.sampled_from(["", HEADER, HEADER_NO_DECL]) if not pipelined else
                 st.sampled_from(["", "<iq id='2'/>"]))
    tail = draw(WS) + pipelined
    return old.encode(), tail.encode(), (draw(WS) + later).encode()


def run_restart(mod, before: list[bytes], after: list[bytes]) -> tuple:
    """Feed ``before``, restart(), feed ``after``: the events and error of each stream and
    what stays buffered (events flattened, so that the split does not show).  After an error
    in the old stream (the pipelined declaration) its remaining chunks go to the new one, as
    XMLStream does with input that arrives while the SASL step runs."""
    tok = mod.Tokenizer()
    old: list = []
    old_error = new_error = None
    for k, chunk in enumerate(before):
        try:
            old.extend(tok.feed(chunk))
        except TokenizerError as exc:
            old.extend(exc.events)
            old_error = exc.condition
            after = before[k + 1 :] + after
            break
    new: list = []
    try:
        new.extend(tok.restart())
        for chunk in after:
            new.extend(tok.feed(chunk))
    except TokenizerError as exc:
        new.extend(exc.events)
        new_error = exc.condition
    return old, old_error, new, new_error, None if new_error else tok.buffered


@SETTINGS
@given(restart_scripts(), st.lists(st.integers(0, 10_000), max_size=6),
       st.lists(st.integers(0, 10_000), max_size=3))
def test_restart_after_whitespace_tail(script, cuts, later_cuts):
    old, tail, later = script
    before = old + tail
    expected = run_restart(pure, [before], [later])
    for mod in (pure, compiled):
        assert run_restart(mod, split(before, cuts), split(later, later_cuts)) == expected
    assert run_restart(compiled, [before], [later]) == expected
    # The oracle: the whitespace before restart() is the old stream's, whatever the split;
    # whitespace after it is the new stream's (fine before a header, not before <?xml?>).
    new_stream = tail.lstrip(b" \t\r\n") + later
    stripped = new_stream.lstrip(b" \t\r\n")
    old_events, _, new_events, new_error, _ = expected
    assert [type(e).__name__ for e in old_events[:2]] == ["StreamOpen", "Element"]
    if stripped.startswith(b"<?xml") and stripped != new_stream:
        assert new_error == "not-well-formed"
    elif stripped.startswith((HEADER.encode(), HEADER_NO_DECL.encode())):
        assert new_error is None and new_events[0].name == "stream"
