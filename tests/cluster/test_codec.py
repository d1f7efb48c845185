"""The worker-link frame codec: records round-trip, frames split anywhere, bad input fails."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmppd.cluster import codec
from xmppd.xml.element import XML_LANG, Element
from xmppd.xml.stanza import CLIENT_NS, decode_stanza

jids = st.text(min_size=1, max_size=40)
values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(),
                   st.binary().map(codec.XML))
records = st.one_of(
    st.tuples(st.just(codec.STANZA), jids, st.binary()),
    st.tuples(st.just(codec.BIND), jids, st.integers(0, 65535), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(codec.UNBIND), jids, st.integers(0, 65535)),
    st.tuples(st.just(codec.SHARE), jids, st.text(max_size=20), values),
    st.tuples(st.just(codec.CONTROL), st.text(max_size=20),
              st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5))),
)


def put(buf: bytearray, record: tuple, impl=codec) -> None:
    kind = record[0]
    if kind == codec.STANZA:
        impl.put_stanza(buf, record[1].encode(), record[2])
    elif kind == codec.BIND:
        codec.put_bind(buf, *record[1:])
    elif kind == codec.UNBIND:
        codec.put_unbind(buf, *record[1:])
    elif kind == codec.SHARE:
        codec.put_share(buf, *record[1:])
    else:
        codec.put_control(buf, *record[1:])


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(records, max_size=8), max_size=5), st.integers(1, 50))
def test_records_round_trip_however_the_bytes_are_split(clustercodec_impl, frames, chunk):
    wire = b""
    for batch in frames:
        body = bytearray()
        for record in batch:
            put(body, record, clustercodec_impl)
        wire += codec.frame(body)
    decoder = clustercodec_impl.FrameDecoder()
    out: list[tuple] = []
    for i in range(0, len(wire), chunk):
        out += decoder.feed(wire[i:i + chunk])
    expected = [r for batch in frames for r in batch]
    assert out == expected
    for got, want in zip(out, expected, strict=True):
        if want[0] == codec.SHARE:
            assert type(got[3]) is type(want[3])  # XML stays XML, str stays str


def test_one_frame_carries_a_batch(clustercodec_impl):
    body = bytearray()
    clustercodec_impl.put_stanza(body, b"a@b/c", b"<message/>")
    codec.put_bind(body, "a@b/c", 1, 42)
    records = clustercodec_impl.FrameDecoder().feed(codec.frame(body))
    assert records == [(codec.STANZA, "a@b/c", b"<message/>"), (codec.BIND, "a@b/c", 1, 42)]


def test_an_incomplete_frame_waits_for_the_rest(clustercodec_impl):
    body = bytearray()
    codec.put_unbind(body, "a@b/c", 3)
    wire = codec.frame(body)
    decoder = clustercodec_impl.FrameDecoder()
    assert decoder.feed(wire[:-1]) == []
    assert decoder.feed(wire[-1:]) == [(codec.UNBIND, "a@b/c", 3)]


@pytest.mark.parametrize("body", [b"\x09", b"\x01\x00\x05ab", b"\x03\x00\x01a", b"\x04\x00\x01a\x00\x09",
                                  b"\x05\x01x\x00\x00\x00\x02[]", b"\x01\x00\x01a\x00\x00\x00\x09<m/>",
                                  b"\x01\x00\x01a\x00\x00", b"\x01\x00\x02\xff\xfe\x00\x00\x00\x00"])
def test_malformed_records_are_errors(clustercodec_impl, body):
    with pytest.raises(codec.CodecError):
        clustercodec_impl.FrameDecoder().feed(codec.frame(body))


def test_a_stanza_record_cannot_reach_into_the_next_frame(clustercodec_impl):
    """Its length counts past its frame's end, where the next frame holds enough bytes."""
    first = codec.frame(b"\x01\x00\x01a\x00\x00\x00\x10<m/>")
    second = bytearray()
    clustercodec_impl.put_stanza(second, b"b@c/d", b"<message>" + b"x" * 40 + b"</message>")
    with pytest.raises(codec.CodecError):
        clustercodec_impl.FrameDecoder().feed(first + codec.frame(second))


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_records_are_bytes_whatever_they_were_read_from(clustercodec_impl, kind):
    body = bytearray()
    clustercodec_impl.put_stanza(body, b"a@b/c", b"<message/>")
    codec.put_share(body, "a@b/c", "m", codec.XML(b"<presence/>"))
    wire = codec.frame(body)
    decoder = clustercodec_impl.FrameDecoder()
    assert decoder.feed(kind(wire[:3])) == []
    records = decoder.feed(kind(wire[3:]))
    assert records == [(codec.STANZA, "a@b/c", b"<message/>"),
                       (codec.SHARE, "a@b/c", "m", b"<presence/>")]
    assert type(records[0][2]) is bytes and type(records[1][3]) is codec.XML
    parsed: list[tuple] = []
    clustercodec_impl.parse_records(kind(body), 0, len(body), parsed)
    assert parsed == records and type(parsed[0][2]) is bytes


def test_an_oversized_frame_is_refused(clustercodec_impl):
    with pytest.raises(codec.CodecError):
        clustercodec_impl.FrameDecoder().feed((codec.MAX_FRAME + 1).to_bytes(4, "big"))


def test_values_that_cannot_be_shared_are_refused():
    with pytest.raises(codec.CodecError):
        codec.put_share(bytearray(), "a@b/c", "m", 1.5)
    with pytest.raises(codec.CodecError):
        codec.put_share(bytearray(), "a@b/c", "m" * 256, None)


# -- the element a STANZA record carries ---------------------------------------------------------

VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff",
                               min_codepoint=1), max_size=12).filter(
    lambda v: all(c in "\t\n\r" or ord(c) >= 0x20 for c in v))
PLAIN = st.dictionaries(st.sampled_from(["to", "from", "type", "id", "x-y"]), VALUES, max_size=4)
CONTENT = st.sampled_from([[], ["hi & <bye>"], [Element("body", CLIENT_NS, {}, ["x"])],
                           [Element("x", "urn:y", {"{urn:z}a": "1"}, [Element("i", "urn:y")]), "t"]])


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["message", "presence", "iq"]), PLAIN, CONTENT,
       st.sampled_from([None, "en"]))
def test_a_serialized_stanza_is_built_from_its_start_tag(clustercodec_impl, name, attrs, content,
                                                         lang):
    """What the sender's serializer wrote comes back as the same element (as the tokenizer
    reads it); with plain attributes without parsing the content, which the recipient then
    gets as the very bytes that came."""
    if lang:
        attrs = {**attrs, XML_LANG: lang}
    data = Element(name, CLIENT_NS, dict(attrs), list(content)).to_bytes(CLIENT_NS)
    element = clustercodec_impl.stanza_element(data)
    if lang:
        assert element is None  # a namespaced attribute: the caller parses it
        return
    assert element is not None and element._children is None
    assert element.to_bytes(CLIENT_NS) is data
    assert element == decode_stanza(data)  # (its content parsed now, on first read)
    element.attrs["to"] = "someone@else"  # changed: written again
    assert element.to_bytes(CLIENT_NS) != data


@pytest.mark.parametrize(("data", "plain"), [
    (b"<message to='a'/>", True), (b'<message  to="a"/>', True), (b'<message to="a" />', True),
    (b'<message a="&apos;"/>', True), (b'<message a="\t"/>', True), (b'<message a="1" a="2"/>', True),
    (b'<m:message to="a"/>', False), (b'<message xmlns="urn:x"/>', False), (b"<message>", False),
    (b"<message></presence>", False), (b"<message/ >", False), (b"<message to='a'", False)])
def test_anything_but_the_serializers_form_is_left_to_the_tokenizer(clustercodec_impl, data, plain):
    """stanza_element builds only what the serializer writes.  plain_stanza trusts the
    start tag beyond what decides its answer (the bytes are our peer serializer's, and go
    as they came): an element that ends as one ends, with no ``xml...`` attribute."""
    assert clustercodec_impl.stanza_element(data) is None
    assert clustercodec_impl.plain_stanza(data, ()) is plain


PAYLOADS = st.sampled_from([(), (b"urn:y",), (b"urn:z", b"urn:q"), (b"urn:x",)])


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["message", "presence", "iq"]), PLAIN, CONTENT, PAYLOADS)
def test_plain_bytes_go_as_they_are_only_where_the_element_would_carry_none(
        clustercodec_impl, name, attrs, content, encoded):
    """plain_stanza: True only for a stanza that carries none of the namespaces (what the
    receiver checks before writing the bytes as they came, instead of building the element
    for stanza/inbound)."""
    data = Element(name, CLIENT_NS, dict(attrs), list(content)).to_bytes(CLIENT_NS)
    quiet = clustercodec_impl.plain_stanza(data, encoded)
    element = clustercodec_impl.stanza_element(data)
    namespaces = frozenset(ns.decode() for ns in encoded)
    if quiet:
        assert not decode_stanza(data).carries(namespaces, encoded)
        assert element is None or not element.carries(namespaces, encoded)
    elif element is not None:  # (a reference in the content: left to the element)
        assert element.carries(namespaces, encoded) or b"&" in element._raw_inner


@pytest.mark.parametrize(("data", "encoded", "quiet"), [
    (b'<message to="a@b/c" id="1"><body>hi</body></message>', (b"urn:x",), True),
    (b'<message to="a@b/c"/>', (b"urn:x",), True),
    (b'<message to="a@b/c"><x xmlns="urn:x"/></message>', (b"urn:x",), False),
    (b'<message to="a@b/c"><x xmlns="urn:y"/></message>', (b"urn:x",), True),
    (b'<message to="a@b/c"><x xmlns="urn:y"/></message>', (), True),
    (b'<message to="a@b/c"><x xmlns="urn:y">&amp;</x></message>', (b"urn:x",), False),
    (b'<message to="a@b/c"><body>a=b &amp; c</body></message>', (b"urn:x",), False),
    (b'<message to="a@b/c"><body>a &amp; c</body></message>', (b"urn:x",), True),
    (b'<message to="a@b/c"><body>x</bod></message>', (), True),  # (content: not checked)
    # the start tag is our peer serializer's: what does not decide the answer is not checked
    (b'<message xml:lang="en" to="a@b/c"><body>x</body></message>', (), False),  # (parsed)
    (b'<message to="a@b/c" to="d@e/f"><body>x</body></message>', (), True),
    (b'<message to="\xff"><body>x</body></message>', (), True),
    (b'<message ' + b" ".join(b'a%d="%d"' % (i, i) for i in range(20)) + b"/>", (), True),
    # a namespace declared in the start tag: a prefix could carry a payload unseen
    (b'<message xmlns:x="urn:x" to="a@b/c"><x:p/></message>', (b"urn:x",), False),
    (b'<message to="a@b/c" xmlns:x="urn:y"><body>x</body></message>', (), False),
    (b'<message xmlns="jabber:client" to="a@b/c"/>', (), False),
    (b'<message ' + b" ".join(b'a%d="%d"' % (i, i) for i in range(20))
     + b'><x xmlns="urn:x"/></message>', (b"urn:x",), False),
])
def test_plain_stanza_cases(clustercodec_impl, data, encoded, quiet):
    assert clustercodec_impl.plain_stanza(data, encoded) is quiet


def test_a_content_that_does_not_parse_is_logged_and_read_as_empty(clustercodec_impl, caplog):
    element = clustercodec_impl.stanza_element(b'<message to="a@b/c"><body>x</bod></message>')
    assert element is not None
    assert element.find("body") is None
    assert "does not parse" in caplog.text


# -- send_quiet: the receiver's run of STANZA records written as they came ---------------------

class _Plain:
    """A transport that writes plain bytes (what ``is_plain`` answers for its type)."""

    def __init__(self, sent: list) -> None:
        self.sent = sent

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)


class _Other(_Plain):
    """A transport that does not (a WebSocket, a BOSH session...)."""


class FakeSession:
    """What send_quiet reads of a session (also used by test_codec_differential)."""

    def __init__(self, bare: str, transport: object) -> None:
        self.bare = bare
        self.transport = transport


class FakeEntry:
    """What send_quiet reads of a registry entry."""

    def __init__(self, session: FakeSession) -> None:
        self.session = session


MSG = b'<message to="bob@x/r"><body>hi</body></message>'
PRES = b'<presence to="bob@x/r"/>'
IQ = b'<iq to="bob@x/r" type="result" id="1"/>'
LOUD = b'<message to="bob@x/r"><x xmlns="urn:x"/></message>'


def _quiet_world(sent: list) -> tuple[dict, dict, list]:
    local = {"bob@x/r": FakeEntry(FakeSession("bob@x", _Plain(sent))),
             "carol@x/r": FakeEntry(FakeSession("carol@x", _Plain(sent))),
             "ws@x/r": FakeEntry(FakeSession("ws@x", _Other(sent)))}
    quiet = {"bob@x": 3, "carol@x": 1, "ws@x": 3}
    asked: list = []
    plain: dict = {}

    def is_plain(transport):
        asked.append(type(transport))
        plain[type(transport)] = ok = type(transport) is _Plain
        return ok

    return local, quiet, [plain, is_plain, asked]


def test_send_quiet_writes_a_run_and_stops_at_the_first_other_record(clustercodec_impl):
    sent: list = []
    local, quiet, (plain, is_plain, asked) = _quiet_world(sent)
    S = codec.STANZA
    records = [(S, "bob@x/r", MSG), (S, "bob@x/r", PRES), (S, "bob@x/r", IQ), (S, "bob@x/r", MSG),
               (codec.BIND, "bob@x/r", 1, 7),              # not a stanza
               (S, "bob@x/r", LOUD),                       # a payload someone declared
               (S, "nobody@x/r", MSG),                     # not bound here
               (S, "carol@x/r", MSG),                      # not quiet for the bits asked
               (S, "ws@x/r", MSG),                         # not a plain transport
               (S, "", MSG),                               # handed to us to route
               (S, "bob@x/r", MSG)]
    send = clustercodec_impl.send_quiet
    assert send(records, 0, local, quiet, 3, (b"urn:x",), plain, is_plain) == (4, 2, 1, 1)
    assert sent == [MSG + PRES + IQ + MSG]  # a run to one session: one write
    for i in range(4, 10):  # each stops where it starts: the caller takes it the general way
        assert send(records, i, local, quiet, 3, (b"urn:x",), plain, is_plain) == (i, 0, 0, 0)
    assert send(records, 10, local, quiet, 3, (b"urn:x",), plain, is_plain) == (11, 1, 0, 0)
    assert asked == [_Plain, _Other]  # the type's answer is asked once, then remembered
    assert sent == [MSG + PRES + IQ + MSG, MSG]
    # with no bits needed, carol is quiet enough; nothing is needed of the payloads either
    sent.clear()
    assert send(records, 5, local, quiet, 0, (), plain, is_plain) == (6, 1, 0, 0)
    assert send(records, 7, local, quiet, 0, (), plain, is_plain) == (8, 1, 0, 0)
    assert sent == [LOUD, MSG]
    assert send([], 0, local, quiet, 0, (), plain, is_plain) == (0, 0, 0, 0)


class _Recorder(_Plain):
    """A plain transport that notes which session each write went to."""

    def __init__(self, sent: list, name: str) -> None:
        super().__init__(sent)
        self.name = name

    def send_bytes(self, data: bytes) -> None:
        self.sent.append((self.name, data))


def test_send_quiet_writes_each_run_of_one_recipient_once_in_order(clustercodec_impl):
    sent: list = []
    local = {f"{n}@x/r": FakeEntry(FakeSession(f"{n}@x", _Recorder(sent, n)))
             for n in ("bob", "carol")}
    plain = {_Recorder: True}
    S = codec.STANZA
    # distinct str objects for one JID (as the pure decoder makes them): equal is enough
    bob = ["bob@x/" + "r" for _ in range(3)]
    records = [(S, bob[0], MSG), (S, bob[1], PRES), (S, "carol@x/r", IQ), (S, bob[2], MSG),
               (S, "bob@x/r", IQ), (S, "bob@x/r", LOUD), (S, "bob@x/r", MSG)]
    send = clustercodec_impl.send_quiet
    assert send(records, 0, local, {}, 0, (b"urn:x",), plain, None) == (5, 2, 1, 2)
    # the run before the record that stops the loop is written before it returns (the
    # caller then delivers that record: bob's order is kept)
    assert sent == [("bob", MSG + PRES), ("carol", IQ), ("bob", MSG + IQ)]
    sent.clear()
    assert send(records, 6, local, {}, 0, (b"urn:x",), plain, None) == (7, 1, 0, 0)
    assert sent == [("bob", MSG)]  # a run of one: the record's own bytes
