"""What an idle client session holds (issue #18: idle sessions with SM, carbons and CSI
stay small): the empty stream-management queue, the client stream's id, the tokenizer's
pending buffer and the per-module state list are shared or exact, and everything still
works from that state (the queue fills and resumes, the tokenizer parses split input)."""

from __future__ import annotations

import sys
import tracemalloc

import pytest
from support import RawClient
from support import sm_authenticate as authenticate
from support import sm_enable as enable

from xmppd.core.router import SessionTable
from xmppd.core.session import Session
from xmppd.jid import JID
from xmppd.transport.connections import AuthThrottle, Connections

SM = "urn:xmpp:sm:3"
USERS = {"alice": "secret", "bob": "secret"}
BOB = JID("bob@localhost/phone")


@pytest.fixture
def server(make_server):
    # no server-initiated <r/>: the test decides when bob acknowledges
    return make_server(users=USERS, allow_plain=True,
                       modules_options={"sm": {"request_every": 0, "request_after_s": 0}})


def sm_of(server, jid: JID):
    async def find():
        return server.server.router.sessions.get(jid).transport
    return server.call(find())


def message(client: RawClient, body: str) -> None:
    client.send(f"<message to='{BOB}' type='chat'><body>{body}</body></message>")


def allocated_here(run) -> list[tracemalloc.StatisticDiff]:
    """What ``run()`` left allocated by this file's lines (tracemalloc, by line)."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        run()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    here = tracemalloc.Filter(True, __file__)
    return [s for s in after.filter_traces([here]).compare_to(
        before.filter_traces([here]), "lineno") if s.size_diff > 0]


def test_an_acknowledged_queue_is_the_shared_empty_one_and_fills_again(server):
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    previd = enable(bob)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="pc")
    sm = sm_of(server, BOB)
    assert sm.queue == () and type(sm.queue) is tuple  # nothing sent yet: no list

    message(alice, "one")
    bob.read_until("<body>one</body>")
    assert len(sm.queue) == 1
    bob.send(f"<a xmlns='{SM}' h='1'/><r xmlns='{SM}'/>")
    bob.read_until("<a [^>]*/>")
    assert sm.queue == () and type(sm.queue) is tuple  # all acknowledged: list gone

    message(alice, "two")  # unacknowledged when the connection dies
    bob.read_until("<body>two</body>")
    bob.sock.close()
    again = RawClient(server.port)
    authenticate(again, "bob")
    again.send(f"<resume xmlns='{SM}' previd='{previd}' h='1'/>")
    assert "<body>two</body>" in again.read_until("<resumed[^>]*/>.*?</message>")
    again.close()
    alice.close()


def test_a_client_stream_keeps_no_stream_id_after_its_header(server):
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    enable(bob)
    stream = sm_of(server, BOB).stream
    assert stream.stream_id == ""
    other = RawClient(server.port)
    assert " id=" in other.header()  # the id is still sent, new for each header
    other.close()
    bob.close()


def test_an_idle_tokenizer_holds_no_pending_buffer_of_its_own():
    compiled = pytest.importorskip("xmppd._speedups.tokenizer")
    tokenizers = [compiled.Tokenizer(65536, 64, 64) for _ in range(50)]
    for t in tokenizers:
        t.feed(b"<stream:stream xmlns='jabber:client' "
               b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
    def feed_all() -> None:
        for t in tokenizers:  # a stanza in two reads: buffered between them, then consumed
            assert t.feed(b"<presence><show>away</sh") == []
            assert len(t.feed(b"ow></presence>")) == 1
            t.restart()  # a new stream starts with nothing pending either

    grown = allocated_here(feed_all)
    # nothing per tokenizer stays (the new stream's empty scope list comes from the free
    # list); a bytearray of each tokenizer's own would count one per tokenizer
    assert sum(s.count_diff for s in grown) < len(tokenizers) // 2, grown
    assert all(t.buffered == 0 for t in tokenizers)


def test_module_state_is_kept_in_a_list_of_the_exact_size():
    session = Session(BOB, RawTransport())
    session.set_state(0, "a")
    session.set_state(5, "b")
    assert session.get_state(5) == "b" and session.get_state(0) == "a"
    assert session.get_state(9) is None
    assert sys.getsizeof(session._states) == sys.getsizeof([None] * 6)


class RawTransport:
    closed = False
    peer = None
    heard = None


def test_open_streams_and_trusted_logins_are_kept_in_compact_tables():
    """A set's table is far larger than a dict's for the same keys (it grows fourfold):
    the open streams and the trusted (address, username) logins, one entry per client."""
    conns = Connections(0)
    throttle = AuthThrottle()
    streams = [Peer(("198.51.100.1", 4000 + i)) for i in range(5000)]
    for i, stream in enumerate(streams):
        assert conns.opened(stream)
        throttle.succeeded(stream.peer, f"user{i}")
    assert list(conns.streams) == streams  # every open stream, in order
    assert sys.getsizeof(conns.streams) < sys.getsizeof(set(conns.streams)) * 0.75
    trusted = throttle._trusted
    assert len(trusted) == 5000
    assert sys.getsizeof(trusted) < sys.getsizeof(set(trusted)) * 0.75
    for stream in streams:
        conns.closed(stream)
    assert not conns.streams


class Peer:
    evictable = True

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer


def test_an_account_with_one_session_is_kept_without_a_tuple():
    table = SessionTable()
    phone = Session(BOB, RawTransport())
    laptop = Session(JID("bob@localhost/laptop"), RawTransport())
    assert table.add(phone) is None
    assert table._by_bare[phone.bare] is phone  # not (phone,): 64 bytes less
    assert table.count(phone.bare) == 1 and table.resources(phone.bare) == [phone]
    table.add(laptop)
    assert table.count(phone.bare) == 2 and set(table.all()) == {phone, laptop}
    replacement = Session(BOB, RawTransport())
    assert table.add(replacement) is phone  # same full JID: takes its place
    assert table.resources(phone.bare) == [replacement, laptop]
    assert table.remove(laptop) and table._by_bare[phone.bare] is replacement
    assert not table.remove(phone)  # displaced already
    assert table.remove(replacement)
    assert table.count(phone.bare) == 0 and list(table.all()) == [] and len(table) == 0


def test_looking_into_a_childless_element_leaves_no_child_list():
    """vCard's stamp looks for an <x/> in each presence, which is then kept for the
    session: the look must not leave an empty list (56 bytes) in it."""
    from xmppd.xml.element import Element

    el = Element("presence", "jabber:client", {}, None)
    assert el.find("x", "vcard-temp:x:update") is None
    assert el._children is None
    el.subelement("x", "vcard-temp:x:update")
    assert el.find("x", "vcard-temp:x:update") is not None


def test_resumption_ids_are_128_random_bits(server):
    import base64

    ids = set()
    for _ in range(3):
        bob = RawClient(server.port)
        bob.login("bob", "secret", resource="phone")
        previd = enable(bob)
        assert len(base64.urlsafe_b64decode(previd + "==")) == 16
        ids.add(previd)
        bob.close()
    assert len(ids) == 3


HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")


@pytest.mark.parametrize("pure", [False, True])
def test_streams_with_the_same_header_keep_their_declarations_apart(pure):
    """The compiled tokenizer shares one namespace scope between the streams whose headers
    declared the same: a declaration in one stream's stanza is never seen by another."""
    if pure:
        from xmppd.xml._tokenizer_pure import Tokenizer
    else:
        Tokenizer = pytest.importorskip("xmppd._speedups.tokenizer").Tokenizer
    from xmppd.xml.events import TokenizerError

    a, b = Tokenizer(65536, 64, 64), Tokenizer(65536, 64, 64)
    a.feed(HEADER)
    b.feed(HEADER)
    assert a.feed(b"<presence xmlns:foo='urn:foo'><foo:x/>") == []  # foo in scope in a
    with pytest.raises(TokenizerError) as failed:
        b.feed(b"<presence><foo:x/></presence>")
    assert failed.value.condition == "bad-namespace-prefix"
    [el] = a.feed(b"</presence>")
    assert el.children[0].ns == "urn:foo"
    with pytest.raises(TokenizerError):  # foo ended with a's stanza
        a.feed(b"<presence><foo:x/></presence>")
    c = Tokenizer(65536, 64, 64)
    c.feed(HEADER)
    [el] = c.feed(b"<a xmlns='urn:xmpp:sm:3' h='1'/>")  # a default declaration too
    assert el.ns == "urn:xmpp:sm:3"
    [el] = c.feed(b"<message><body>hi</body></message>")
    assert el.ns == "jabber:client" and el.children[0].ns == "jabber:client"


def test_idle_tokenizers_share_the_scope_of_a_common_header():
    compiled = pytest.importorskip("xmppd._speedups.tokenizer")
    tokenizers = [compiled.Tokenizer(65536, 64, 64) for _ in range(50)]
    def feed_all() -> None:
        for t in tokenizers:
            t.feed(HEADER)
            t.feed(b"<a xmlns='urn:xmpp:sm:3' h='1'/>")  # a declaration, popped again

    grown = allocated_here(feed_all)
    # a scope list of each tokenizer's own would count one (and its items) per tokenizer
    assert sum(s.count_diff for s in grown) < len(tokenizers) // 2, grown


def test_an_inactive_session_holding_nothing_keeps_the_shared_marker(server):
    from xmppd.modules.csi import NOTHING_HELD

    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    bob.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    bob.read_until('id="p1"')

    async def state():
        srv = server.server
        return srv.modules.api("csi").peek_state(srv.router.sessions.get(BOB))
    assert server.call(state()) is NOTHING_HELD  # no object of its own
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="pc")
    alice.send(f"<message to='{BOB}' type='chat'><active "
               "xmlns='http://jabber.org/protocol/chatstates'/></message>")
    alice.send("<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
    alice.read_until('id="p2"')
    assert len(server.call(state())) == 1  # held: now a queue of its own
    bob.send("<active xmlns='urn:xmpp:csi:0'/>")
    assert "chatstates" in bob.read_until("</message>")
    alice.close()
    bob.close()
