"""XEP-0191 blocking command: list, block, unblock, pushes and the stanza filtering."""

from __future__ import annotations

from support import connect, hang_up, offline_count, soon
from test_offline import ping
from test_roster import iq

NS = "urn:xmpp:blocking"


def subscribe_both(a, b, a_name: str, b_name: str) -> None:
    """Mutual subscription between two logged-in raw clients (via pre-approval)."""
    for x, yname in ((a, b_name), (b, a_name)):
        x.send(f"<presence to='{yname}@localhost' type='subscribed'/>")
        ping(x)
    a.send(f"<presence to='{b_name}@localhost' type='subscribe'/>")
    b.send(f"<presence to='{a_name}@localhost' type='subscribe'/>")
    ping(a)
    ping(b)


def test_block_list_pushes_and_filtering(server):
    alice = connect(server, "alice", "a")
    alice2 = connect(server, "alice", "a2")
    bob = connect(server, "bob", "b")
    subscribe_both(alice, bob, "alice", "bob")
    alice.send("<presence/>")
    bob.send("<presence/>")
    bob.read_until("from=.alice@localhost/a.")
    reply = iq(alice, f"<blocklist xmlns='{NS}'/>", "l1", "get")
    assert "<item" not in reply[reply.rindex("<iq"):]  # (a late roster push may precede it)
    iq(alice2, f"<blocklist xmlns='{NS}'/>", "l2", "get")  # alice2 wants pushes too

    reply = iq(alice, f"<block xmlns='{NS}'><item jid='bob@localhost'/></block>", "b1")
    assert "type=\"result\"" in reply
    assert "bob@localhost" in alice2.read_until(r"<block xmlns=.urn:xmpp:blocking.>.*?</iq>")
    # bob saw alice go away
    bob.read_until("from=.alice@localhost/a. type=.unavailable.|type=.unavailable. "
                   "from=.alice@localhost/a.")
    assert "bob@localhost" in iq(alice, f"<blocklist xmlns='{NS}'/>", "l3", "get")
    assert "bob@localhost" in iq(alice, "<query xmlns='jabber:iq:roster'/>", "r", "get")
    # bob -> alice: message bounced service-unavailable, presence dropped
    bob.send("<message to='alice@localhost' id='m1' type='chat'><body>hey</body></message>")
    got = bob.read_until("</message>")
    assert "service-unavailable" in got and "id=\"m1\"" in got
    bob.send("<presence><status>bored</status></presence>")
    bob.send("<iq type='get' id='v' to='alice@localhost/a'><query xmlns='jabber:iq:version'/>"
             "</iq>")
    assert "service-unavailable" in bob.read_until("id=.v.*?</iq>")
    assert "bored" not in ping(alice) and "hey" not in ping(alice, "e2")
    # alice -> bob: not-acceptable with the blocking error
    alice.send("<message to='bob@localhost/b' id='m2' type='chat'><body>x</body></message>")
    got = alice.read_until("</message>")
    assert "not-acceptable" in got and "urn:xmpp:blocking:errors" in got
    assert "<body>x" not in ping(bob)
    # a domain entry blocks everyone there, and is listed as given
    iq(alice, f"<block xmlns='{NS}'><item jid='localhost'/></block>", "b2")
    carol = connect(server, "carol", "c")
    carol.send("<message to='alice@localhost' id='m3'><body>hi</body></message>")
    assert "service-unavailable" in carol.read_until("</message>")
    # unblock one, then all
    iq(alice, f"<unblock xmlns='{NS}'><item jid='localhost'/></unblock>", "u1")
    assert "localhost" in alice2.read_until(r"<unblock xmlns=.urn:xmpp:blocking.>.*?</iq>")
    reply = iq(alice, f"<unblock xmlns='{NS}'/>", "u2")
    assert "type=\"result\"" in reply
    alice2.read_until(r"<unblock xmlns=.urn:xmpp:blocking./>")
    # alice's presence reaches bob again, and messages flow
    bob.read_until("from=.alice@localhost/a.")
    bob.send("<message to='alice@localhost' type='chat'><body>back</body></message>")
    alice.read_until("back")
    assert "<item" not in iq(alice, f"<blocklist xmlns='{NS}'/>", "l4", "get")


def test_block_errors_and_disco(server):
    alice = connect(server, "alice")
    assert "bad-request" in iq(alice, f"<block xmlns='{NS}'/>", "e1")
    assert "jid-malformed" in iq(alice, f"<block xmlns='{NS}'><item jid='@x'/></block>", "e2")
    assert "forbidden" in iq(alice, f"<blocklist xmlns='{NS}'/>", "e3", "get",
                             to="bob@localhost")
    info = iq(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "d", "get",
              to="localhost")
    assert NS in info and "msgoffline" in info


def test_block_list_survives_restart_and_blocks_offline_messages(make_server, tmp_path):
    users = {"alice": "secret", "bob": "secret"}
    first = make_server(users=users, allow_plain=True, data_dir=tmp_path / "d")
    alice = connect(first, "alice")
    iq(alice, f"<block xmlns='{NS}'><item jid='bob@localhost'/></block>", "b")
    first.stop()
    second = make_server(users={}, allow_plain=True, data_dir=tmp_path / "d")
    bob = connect(second, "bob")
    bob.send("<message to='alice@localhost' id='o1' type='chat'><body>hi</body></message>")
    assert "service-unavailable" in bob.read_until("</message>")
    assert offline_count(second, "alice") == 0


def _lists(srv):
    return srv.server.modules.loaded["blocking"].module.lists


def test_empty_list_remembered_across_logins(server):
    """A login of an account known to block nobody reads nothing (the remembered empty
    list); a block drops that knowledge, so the next login reads and applies it."""
    from xmppd.jid import JID

    alice_bare = JID("alice@localhost")
    alice = connect(server, "alice", "a")
    ping(alice)
    lists = _lists(server)
    assert soon(lambda: lists.cache.get(alice_bare) == frozenset())
    assert alice_bare in lists.empty
    hang_up(alice)
    bob = connect(server, "bob", "b")
    ping(bob)
    assert alice_bare in lists.empty and alice_bare not in lists.cache
    reads = []
    lists.store.get = _counting(lists.store.get, reads)
    alice = connect(server, "alice", "a")  # the fast path: no read
    ping(alice)
    assert reads == [] and lists.cache.get(alice_bare) == frozenset()
    bob.send("<message to='alice@localhost/a' type='chat'><body>first</body></message>")
    alice.read_until("first")
    iq(alice, f"<block xmlns='{NS}'><item jid='bob@localhost'/></block>", "b1")
    assert alice_bare not in lists.empty
    hang_up(alice)
    ping(bob)
    reads.clear()
    alice = connect(server, "alice", "a")  # the fallback: read from the store
    ping(alice)
    assert reads == [("alice@localhost", "list")]
    assert soon(lambda: lists.cache.get(alice_bare) == frozenset({"bob@localhost"}))
    bob.send("<message to='alice@localhost/a' id='m' type='chat'><body>x</body></message>")
    assert "service-unavailable" in bob.read_until("</message>")


def test_empty_list_forgotten_on_another_workers_change(server):
    """Another worker's change (``changed``) drops the remembered empty list."""
    from xmppd.jid import JID
    from xmppd.modules.blocking import add_to_list

    alice = connect(server, "alice", "a")
    ping(alice)
    hang_up(alice)
    lists = _lists(server)
    module = server.server.modules.loaded["blocking"].module
    assert soon(lambda: JID("alice@localhost") in lists.empty)

    async def elsewhere() -> None:  # what the other worker writes, then announces
        await add_to_list(lists.store, "alice@localhost", ["carol@localhost"])
        await module.changed("alice@localhost", "list")

    server.call(elsewhere())
    assert JID("alice@localhost") not in lists.empty
    alice = connect(server, "alice", "a")
    ping(alice)
    carol = connect(server, "carol", "c")
    carol.send("<message to='alice@localhost/a' id='m' type='chat'><body>x</body></message>")
    assert "service-unavailable" in carol.read_until("</message>")


def _counting(get, calls):
    async def counted(owner, key, default=None):
        calls.append((owner, key))
        return await get(owner, key, default)
    return counted


def test_remembered_empty_lists_are_bounded(monkeypatch):
    """The oldest remembered account goes first once the bound is reached."""
    from types import SimpleNamespace

    from xmppd.jid import JID
    from xmppd.modules import blocking

    monkeypatch.setattr(blocking, "EMPTY_MAX", 2)
    lists = blocking.BlockLists(None, SimpleNamespace(count=lambda bare: 0), {"localhost"})
    a, b, c = (JID(f"{n}@localhost") for n in "abc")
    for bare in (a, b, c):
        lists._remember_empty(bare)
    assert list(lists.empty) == [b, c]
    assert lists.known_empty(c) and not lists.known_empty(a) and not lists.cache
