"""Differential tests: the compiled STANZA codec of the cluster links against its pure twin
(``xmppd.cluster.codec``, the specification).  Random frames of every record kind, valid
and mutated, are fed to both in random pieces: the records must be identical, and so must
a malformed input's outcome (CodecError, with the same records handed out before it)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import twins
from test_codec import FakeEntry, FakeSession

from xmppd.cluster.codec import CodecError
from xmppd.xml.element import Element
from xmppd.xml.events import TokenizerError
from xmppd.xml.stanza import CLIENT_NS, decode_stanza

pure, compiled = twins("clustercodec")

pytestmark = pytest.mark.skipif(compiled is None, reason="compiled cluster codec not built")

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

JIDS = st.one_of(st.sampled_from(["", "bob@localhost/r1", "é@x/ü"]), st.text(max_size=12))
XML = st.one_of(st.sampled_from([b"<message/>", b"<message to='a@b/c'><body>hi</body></message>"]),
                st.binary(max_size=30))


@st.composite
def body(draw) -> bytes:
    """One frame's records: mostly STANZA, some of the other kinds (written by the pure
    encoders), maybe a mutated byte or a cut end."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from("SSSSbucx"))
        if kind == "S":
            pure.put_stanza(out, draw(JIDS).encode(), draw(XML))
        elif kind == "b":
            pure.put_bind(out, draw(JIDS), draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 99)))
        elif kind == "u":
            pure.put_unbind(out, draw(JIDS), draw(st.integers(0, 2**64 - 1)))
        elif kind == "c":
            pure.put_control(out, draw(st.text(max_size=5)), {"k": draw(st.integers())})
        else:
            out += draw(st.binary(max_size=8))  # garbage
    if out and draw(st.integers(0, 4)) == 0:
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    if out and draw(st.integers(0, 4)) == 0:
        del out[draw(st.integers(0, len(out) - 1)):]
    return bytes(out)


def feed(impl, wire: bytes, cuts: list[int]) -> tuple[list[tuple], bool]:
    """(records handed out, whether a CodecError ended it)."""
    decoder = impl.FrameDecoder()
    records: list[tuple] = []
    start = 0
    try:
        for cut in [*sorted(cuts), len(wire)]:
            records += decoder.feed(wire[start:max(start, cut)])
            start = max(start, cut)
    except CodecError:
        return records, True
    return records, False


def parse(impl, data: bytes, pos: int, end: int) -> tuple[list[tuple], bool]:
    out: list[tuple] = []
    try:
        impl.parse_records(data, pos, end, out)
    except CodecError:
        return out, True
    return out, False


@SETTINGS
@given(st.lists(body(), max_size=5), st.data())
def test_compiled_frame_decoder_matches_pure(bodies, data):
    wire = b"".join(len(b).to_bytes(4, "big") + b for b in bodies)
    if bodies and data.draw(st.booleans()):  # a frame length that lies
        wire = data.draw(st.binary(min_size=4, max_size=4)) + wire[4:]
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=5))
    whole = feed(pure, wire, [])
    assert feed(compiled, wire, []) == whole
    split = feed(pure, wire, cuts)
    assert feed(compiled, wire, cuts) == split
    if not whole[1]:  # (an error ends a split feed with the frames before it handed out)
        assert split == whole


@SETTINGS
@given(body(), st.data())
def test_compiled_parse_records_matches_pure(frame_body, data):
    """Any bounds, any buffer type: the Redis path parses a message from offset 8."""
    data_ = data.draw(st.binary(max_size=8)) + frame_body + data.draw(st.binary(max_size=4))
    pos = data.draw(st.integers(-1, len(data_) + 1))
    end = data.draw(st.integers(-1, len(data_) + 1))
    kind = data.draw(st.sampled_from([bytes, bytearray, memoryview]))
    expected = parse(pure, data_, pos, end)
    assert parse(compiled, kind(data_), pos, end) == expected
    got = parse(compiled, data_, pos, end)[0]
    assert all(type(r[2]) is bytes for r in got if r[0] == 1)


@SETTINGS
@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=20))
def test_compiled_put_stanza_matches_pure(to, xml, before):
    out_pure, out_compiled = bytearray(before), bytearray(before)
    pure.put_stanza(out_pure, to, xml)
    compiled.put_stanza(out_compiled, to, xml)
    assert out_compiled == out_pure


def test_a_jid_too_long_for_its_length_field_is_refused_by_both():
    for impl in (pure, compiled):
        with pytest.raises(CodecError):
            impl.put_stanza(bytearray(), b"a" * 65536, b"<message/>")


START_TAGS = st.one_of(
    st.sampled_from([b"<message", b"<presence", b"<iq", b"<a.b-c_d", b"<1x", b"<m:x", b"<"]),
    st.binary(max_size=6).map(lambda b: b"<" + b))
ATTRS = st.lists(st.tuples(
    st.sampled_from([b"to", b"from", b"type", b"id", b"xmlns", b"XmL", b"x:y", b"a-b", b"9",
                     b"to"]),
    st.one_of(st.text(max_size=8).map(str.encode), st.binary(max_size=6),
              st.sampled_from([b"&amp;", b"&lt;&gt;&quot;", b"&#9;&#10;&#13;", b"&apos;",
                               b"&#x41;", b"&", b"&am", b"\xc3\xa9", b"\xff"]))),
    max_size=4)


@st.composite
def stanza_bytes(draw) -> bytes:
    """Mostly the serializer's form, sometimes bent (spacing, quotes, ends)."""
    tag = draw(START_TAGS)
    out = tag
    for name, value in draw(ATTRS):
        out += b" " + name + b'="' + value + b'"'
    end = draw(st.sampled_from(["empty", "close", "close", "other"]))
    if end == "empty":
        out += b"/>"
    elif end == "close":
        out += b">" + draw(st.sampled_from([b"", b"<body>hi</body>", b"x", b"<a/>"])) \
            + b"</" + tag[1:] + b">"
    else:
        out += draw(st.binary(max_size=8))
    if draw(st.integers(0, 5)) == 0 and out:
        i = draw(st.integers(0, len(out) - 1))
        out = out[:i] + draw(st.binary(max_size=2)) + out[i + 1:]
    return out


def shape(element):
    """What a built element is: the same for both twins or the test fails."""
    if element is None:
        return None
    return (element.name, element.ns, element.attrs, element._children, element._raw_inner,
            element._raw_ns, element._wire, type(element._lazy).__name__,
            getattr(element._lazy, "data", None))


@SETTINGS
@given(stanza_bytes())
def test_compiled_stanza_element_matches_pure(data):
    assert shape(compiled.stanza_element(data)) == shape(pure.stanza_element(data))


@SETTINGS
@given(stanza_bytes(), st.lists(st.sampled_from([b"urn:x", b"urn:y", b"hi", b"", b"to"]),
                                max_size=3).map(tuple))
def test_compiled_plain_stanza_matches_pure(data, encoded):
    assert compiled.plain_stanza(data, encoded) is pure.plain_stanza(data, encoded)


class _Transport:
    def __init__(self, sent: list, name: str) -> None:
        self.sent, self.name = sent, name

    def send_bytes(self, data: bytes) -> None:
        self.sent.append((self.name, data))


class _Loud(_Transport):
    pass


def _run_send_quiet(impl, records, need, encoded, quiet_bits):
    """Call ``impl.send_quiet`` as Node._apply does (again after each record it stops at)
    over three sessions; returns every result and every write, in order."""
    sent: list = []
    local = {f"u{k}@x/r": FakeEntry(FakeSession(f"u{k}@x", (_Loud if k == 2 else _Transport)(sent, str(k))))
             for k in range(3)}
    quiet = {f"u{k}@x": bits for k, bits in enumerate(quiet_bits)}
    plain: dict = {}

    def is_plain(transport):
        plain[type(transport)] = ok = not isinstance(transport, _Loud)
        return ok

    results, i = [], 0
    while i < len(records):
        result = impl.send_quiet(records, i, local, quiet, need, encoded, plain, is_plain)
        results.append(result)
        i = result[0] + 1
    return results, sent


RECORDS = st.lists(st.one_of(
    st.tuples(st.just(1), st.sampled_from(["u0@x/r", "u1@x/r", "u2@x/r", "u9@x/r", ""]),
              stanza_bytes()),
    st.just((2, "u0@x/r", 1, 5))), max_size=12)


@SETTINGS
@given(RECORDS, st.integers(0, 3), st.sampled_from([(), (b"urn:x",), (b"urn:y", b"hi")]),
       st.lists(st.integers(0, 3), min_size=3, max_size=3))
def test_compiled_send_quiet_matches_pure(records, need, encoded, quiet_bits):
    assert _run_send_quiet(compiled, records, need, encoded, quiet_bits) == \
        _run_send_quiet(pure, records, need, encoded, quiet_bits)


@pytest.mark.parametrize("special", [b'"', b"&amp;", b"&", b"<", b"\x01", b"\x1f", b"\x7f", b" ",
                                     b"\xc3\xa9", b"\xff", b">", b"'"])
def test_a_special_byte_anywhere_in_a_value_is_seen_by_both(special):
    """The compiled value loop skips eight plain bytes at a time: a byte it must stop at,
    at every offset of those words (and at the value's edges), gives the same answers."""
    for length in (0, 7, 8, 9, 16, 23):
        for k in range(length + 1):
            value = b"a" * k + special + b"b" * (length - k)
            data = b'<message to="' + value + b'" id="x"><body>hi</body></message>'
            assert compiled.plain_stanza(data, ()) is pure.plain_stanza(data, ()), data
            assert shape(compiled.stanza_element(data)) == shape(pure.stanza_element(data)), data


def _links(impl):
    class Link(impl.LinkBuffer):
        """A link of ``impl``'s kind that notes its schedules and overflows."""

        def __init__(self, max_pending: int) -> None:
            super().__init__()
            self.max_pending = max_pending
            self.schedules = 0
            self.overflowed: list = []

        def schedule(self) -> None:
            self.scheduled = True
            self.schedules += 1

        def overflow(self, element) -> None:
            self.overflowed.append(element)

        def state(self) -> tuple:
            return bytes(self.buffer), self.stanzas, self.schedules, len(self.overflowed)

    return Link


LINKS = {pure: _links(pure), compiled: _links(compiled)} if compiled is not None else {}


@st.composite
def routed_elements(draw):
    """An element as the sender has it: from a client's tokenizer (its content kept as
    bytes), from a peer's record (its bytes kept as they came), or built; then maybe
    changed as routing and modules change one (``from`` stamped, a child added, another
    namespace, a value that is no str)."""
    data = draw(stanza_bytes())
    how = draw(st.sampled_from(["record", "parsed", "built"]))
    element = None
    if how == "record":
        element = pure.stanza_element(data)
    elif how == "parsed":
        try:
            element = decode_stanza(data)
        except (ValueError, TokenizerError):
            element = None
    if element is None:
        element = Element("message", CLIENT_NS, {"to": "a@x/r"}, ["hi"])
    change = draw(st.sampled_from(["none", "none", "from", "child", "ns", "raw_ns", "int"]))
    if change == "from":
        element.attrs["from"] = draw(st.text(max_size=8))
    elif change == "child":
        element.append(Element("x", "urn:x"))
    elif change == "ns":
        element.ns = "jabber:server"
    elif change == "raw_ns":
        element._raw_ns = "urn:other"
    elif change == "int":
        element.attrs["n"] = 7
    return element


def _link_run(impl, element, max_pending, times):
    link = LINKS[impl](max_pending)
    try:
        for _ in range(times):
            impl.link_stanza(link, b"a@x/r", element)
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the exception's type
        return link.state(), type(exc)
    return link.state(), None


@SETTINGS
@given(routed_elements(), st.sampled_from([0, 1, 200]), st.integers(1, 3))
def test_compiled_link_stanza_matches_pure(element, max_pending, times):
    assert _link_run(compiled, element, max_pending, times) == \
        _link_run(pure, element, max_pending, times)
