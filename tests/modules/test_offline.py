"""XEP-0160 offline messages: stored durably, delivered in order with XEP-0203 delay."""

from __future__ import annotations

import re

from support import RawClient, connect, hang_up, offline_count

from xmppd.core.config import Limits

USERS = {"alice": "secret", "bob": "secret"}


def ping(client: RawClient, id: str = "end") -> str:
    """Everything the client got before the server answered a ping (a barrier)."""
    client.send(f"<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return client.read_until(f"id=.{id}.")


def bodies(text: str) -> list[str]:
    return re.findall(r"<body>(.*?)</body>", text)


def test_offline_messages_survive_a_restart_and_arrive_in_order(make_server, tmp_path):
    first = make_server(users=USERS, allow_plain=True, data_dir=tmp_path / "d")
    alice = connect(first, "alice")
    for i in range(5):
        alice.send(f"<message to='bob@localhost' type='chat'><body>m{i}</body></message>")
    alice.send("<message to='bob@localhost/gone' type='normal'><subject>s</subject></message>")
    # not stored: a pure chat state, a headline, a no-store hint
    alice.send("<message to='bob@localhost' type='chat'>"
               "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    alice.send("<message to='bob@localhost' type='headline'><body>news</body></message>")
    alice.send("<message to='bob@localhost' type='chat'><body>x</body>"
               "<no-store xmlns='urn:xmpp:hints'/></message>")
    assert "error" not in ping(alice)
    first.stop()

    second = make_server(users={}, allow_plain=True, data_dir=tmp_path / "d")
    bob = connect(second, "bob")
    assert "<message" not in ping(bob, "before")  # nothing before initial presence
    bob.send("<presence/>")
    got = ping(bob, "after")
    assert bodies(got) == [f"m{i}" for i in range(5)]
    assert got.count("<message") == 6 and "<subject>s</subject>" in got
    assert got.count("urn:xmpp:delay") == 6
    stamp = re.search(r"<delay xmlns=\"urn:xmpp:delay\" from=\"localhost\" "
                      r"stamp=\"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\"", got)
    assert stamp is not None
    assert "from=\"alice@localhost/r\"" in got
    # delivered messages are gone from the store
    assert offline_count(second, "bob") == 0
    bob.close()
    bob = connect(second, "bob", "again")
    bob.send("<presence/>")
    assert "<message" not in ping(bob)


def test_negative_priority_defers_delivery(server):
    alice = connect(server, "alice")
    alice.send("<message to='bob@localhost'><body>later</body></message>")
    ping(alice)
    bob = connect(server, "bob")
    bob.send("<presence><priority>-1</priority></presence>")
    assert "later" not in ping(bob, "p1")
    bob.send("<presence><priority>1</priority></presence>")
    assert bodies(ping(bob, "p2")) == ["later"]


def test_unknown_account_and_full_store_bounce(make_server):
    srv = make_server(users=USERS, allow_plain=True, limits=Limits(max_offline_messages=2))
    alice = connect(srv, "alice")
    alice.send("<message to='nobody@localhost' id='n1' type='chat'><body>?</body></message>")
    got = alice.read_until("</message>")
    assert "type=\"error\"" in got and "service-unavailable" in got
    for i in range(3):
        alice.send(f"<message to='bob@localhost' id='c{i}' type='chat'><body>{i}</body></message>")
    got = ping(alice)
    assert got.count("service-unavailable") == 1 and "id=\"c2\"" in got
    assert offline_count(srv, "bob") == 2


def test_nothing_stored_takes_no_lock(make_server):
    """Initial presence with nothing stored: one count, no locked delivery; with messages
    stored, the locked delivery sends them."""
    srv = make_server(users=USERS, allow_plain=True)
    offline = srv.server.modules.loaded["offline"].module
    locked: list[str] = []
    deliver_locked = offline.deliver_locked

    async def counting(session, bare):
        locked.append(str(bare))
        await deliver_locked(session, bare)

    offline.deliver_locked = counting
    bob = connect(srv, "bob")
    bob.send("<presence/>")
    ping(bob)
    assert locked == []
    hang_up(bob)
    alice = connect(srv, "alice")
    alice.send("<message to='bob@localhost' type='chat'><body>later</body></message>")
    ping(alice)
    assert offline_count(srv, "bob") == 1
    bob = connect(srv, "bob", "again")
    bob.send("<presence/>")
    assert bodies(ping(bob)) == ["later"]
    assert locked == ["bob@localhost"] and not offline.locks
