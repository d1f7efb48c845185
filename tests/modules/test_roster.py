"""RFC 6121 §2: roster get/set/remove, pushes, versioning and validation, over real streams."""

from __future__ import annotations

import asyncio

import pytest
from support import RawClient, connect, hang_up, soon

ROSTER = "jabber:iq:roster"


def iq(client: RawClient, body: str, id: str, type: str = "set", to: str = "") -> str:
    """Send an IQ and return its reply (result or error)."""
    to_attr = f" to='{to}'" if to else ""
    client.send(f"<iq type='{type}' id='{id}'{to_attr}>{body}</iq>")
    return client.read_until(rf"<iq[^>]*id=.{id}.[^>]*?(/>|>.*?</iq>)")


def roster_set(client: RawClient, item: str, id: str = "s1") -> str:
    return iq(client, f"<query xmlns='{ROSTER}'>{item}</query>", id)


def read_push(client: RawClient) -> str:
    return client.read_until(r"<iq[^>]*type=.set.[^>]*>.*?</iq>")


def pushes_in(text: str) -> list[str]:
    """The roster pushes in ``text`` (a reply read with what came before it)."""
    import re

    return re.findall(r"<iq[^>]*type=.set.[^>]*>.*?</iq>", text)


def test_roster_set_get_and_pushes_to_interested_resources(server):
    a1 = connect(server, "alice", "one")
    a2 = connect(server, "alice", "two")
    quiet = connect(server, "alice", "three", roster=False)
    reply = roster_set(a1, "<item jid='bob@localhost' name='Bob'><group>Friends</group>"
                           "<group>Work</group></item>")
    assert "type=\"result\"" in reply
    for push in (pushes_in(reply)[0], read_push(a2)):
        assert "jid=\"bob@localhost\"" in push and "name=\"Bob\"" in push
        assert "subscription=\"none\"" in push and "<group>Work</group>" in push
        assert "from=" not in push.split(">", 1)[0]  # RFC 6121 §2.1.6
    got = iq(a1, f"<query xmlns='{ROSTER}'/>", "g1", "get")
    assert "<group>Friends</group><group>Work</group>" in got
    # update: the name goes, one group stays
    roster_set(a2, "<item jid='bob@localhost'><group>Work</group></item>", "s2")
    push = read_push(a1)
    assert "Work" in push
    assert "name=" not in push and "Friends" not in push
    # remove
    roster_set(a1, "<item jid='bob@localhost' subscription='remove'/>", "s3")
    assert "subscription=\"remove\"" in read_push(a2)
    got = iq(a2, f"<query xmlns='{ROSTER}'/>", "g2", "get")
    assert "bob@localhost" not in got
    reply = roster_set(a1, "<item jid='bob@localhost' subscription='remove'/>", "s4")
    assert "item-not-found" in reply
    # the resource that never asked for the roster got no push at all
    quiet.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert ROSTER not in quiet.read_until("id=.p.")


@pytest.mark.parametrize(("item", "condition"), [
    ("<item jid='a@localhost'/><item jid='b@localhost'/>", "bad-request"),
    ("<item jid='a@localhost'><group>G</group><group>G</group></item>", "bad-request"),
    ("<item name='x'/>", "bad-request"),
    ("<item jid='a@@localhost'/>", "jid-malformed"),
    ("<item jid='a@localhost'><group></group></item>", "not-acceptable"),
    ("<item jid='a@localhost' name='" + "n" * 1100 + "'/>", "not-acceptable"),
    ("<item jid='a@localhost'><group>" + "g" * 1100 + "</group></item>", "not-acceptable"),
])
def test_roster_set_validation(server, item, condition):
    a = connect(server, "alice")
    reply = roster_set(a, item)
    assert "type=\"error\"" in reply and condition in reply
    assert "<item" not in iq(a, f"<query xmlns='{ROSTER}'/>", "g", "get")


def test_roster_of_another_account_is_forbidden(server):
    a = connect(server, "alice")
    reply = iq(a, f"<query xmlns='{ROSTER}'><item jid='x@localhost'/></query>", "f1",
               to="bob@localhost")
    assert "forbidden" in reply
    assert "forbidden" in iq(a, f"<query xmlns='{ROSTER}'/>", "f2", "get", to="bob@localhost")
    # addressed to one's own bare JID is fine
    reply = iq(a, f"<query xmlns='{ROSTER}'><item jid='x@localhost'/></query>", "f3",
               to="alice@localhost")
    assert "type=\"result\"" in reply


def test_roster_versioning_returns_only_changes(server):
    a = connect(server, "alice")
    first = iq(a, f"<query xmlns='{ROSTER}' ver=''/>", "v0", "get")
    assert "ver=\"0\"" in first
    for i, jid in enumerate(["x@localhost", "y@localhost", "z@localhost"]):
        assert len(pushes_in(roster_set(a, f"<item jid='{jid}'/>", f"a{i}"))) == 1
    full = iq(a, f"<query xmlns='{ROSTER}' ver='bogus'/>", "v1", "get")
    assert "ver=\"3\"" in full and full.count("<item ") == 3
    # unchanged since 3: an empty result and no pushes
    same = iq(a, f"<query xmlns='{ROSTER}' ver='3'/>", "v2", "get")
    assert "<query" not in same
    roster_set(a, "<item jid='y@localhost' name='Y'/>", "a3")
    roster_set(a, "<item jid='x@localhost' subscription='remove'/>", "a4")
    incremental = iq(a, f"<query xmlns='{ROSTER}' ver='3'/>", "v3", "get")
    assert "<query" not in incremental
    pushes = [read_push(a), read_push(a)]
    assert "y@localhost" in pushes[0] and "ver=\"4\"" in pushes[0] and "name=\"Y\"" in pushes[0]
    assert "x@localhost" in pushes[1] and "subscription=\"remove\"" in pushes[1]
    assert "ver=\"5\"" in pushes[1]
    # a version from the future is unknown: full roster
    full = iq(a, f"<query xmlns='{ROSTER}' ver='99'/>", "v4", "get")
    assert full.count("<item ") == 2 and "ver=\"5\"" in full


def test_roster_version_feature_advertised(server):
    client = RawClient(server.port)
    client.header()
    client.starttls()
    client.header()
    import base64
    token = base64.b64encode(b"\0alice\0secret").decode()
    client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    client.read_until("<success")
    features = client.header()
    assert "urn:xmpp:features:rosterver" in features
    assert "urn:xmpp:features:pre-approval" in features


def test_slixmpp_roster_add_update_remove(server):
    from test_presence import sli

    async def main() -> None:
        client = await sli(server.port, "alice@localhost/sl")
        roster = client.xmpp.client_roster
        await client.xmpp.update_roster("carol@localhost", name="Carol", groups=["Team"],
                                        timeout=5)
        await until(lambda: "carol@localhost" in roster)
        assert roster["carol@localhost"]["name"] == "Carol"
        assert roster["carol@localhost"]["groups"] == ["Team"]
        await client.xmpp.del_roster_item("carol@localhost")
        await until(lambda: "carol@localhost" not in roster)
        await asyncio.wait_for(client.xmpp.disconnect(), 5)

    async def until(predicate) -> None:
        for _ in range(300):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached")

    asyncio.run(asyncio.wait_for(main(), 30))


def _roster_service(srv):
    return srv.server.modules.loaded["roster"].module.service


def _count_reads(service) -> list[str]:
    """Record the roster reads that reach the store from now on."""
    reads: list[str] = []
    store_get = service.store.get

    async def get(owner: str):
        reads.append(owner)
        return await store_get(owner)

    service.store.get = get
    return reads


def test_roster_read_once_while_bound(server):
    """A bound account's roster is read once (the roster request), not again for its
    presence; a change drops the cached copy; so does the account's last session."""
    from xmppd.jid import JID

    service = _roster_service(server)
    reads = _count_reads(service)
    bob = connect(server, "bob", "b")
    alice = connect(server, "alice", "a")
    assert reads == ["bob@localhost", "alice@localhost"]
    alice.send("<presence/>")
    alice.read_until("from=.alice@localhost/a.")  # its own presence back
    assert reads == ["bob@localhost", "alice@localhost"]  # the cached copy
    roster_set(alice, "<item jid='bob@localhost' name='Bob'/>")
    assert JID("alice@localhost") not in service.cache
    reply = iq(alice, f"<query xmlns='{ROSTER}'/>", "g", "get")
    assert "name=\"Bob\"" in reply and reads.count("alice@localhost") == 2
    hang_up(alice)
    iq(bob, f"<query xmlns='{ROSTER}'/>", "g2", "get")
    assert soon(lambda: JID("alice@localhost") not in service.cache)
    assert JID("bob@localhost") in service.cache


def test_roster_cache_dropped_on_another_workers_change(server):
    """Another worker's change (``changed``) drops the cached copy: the next read sees it."""
    from xmppd.modules._rosterdata import RosterItem

    alice = connect(server, "alice", "a")
    service = _roster_service(server)
    module = server.server.modules.loaded["roster"].module

    async def elsewhere() -> None:  # what the other worker writes, then announces
        await service.store.update("alice@localhost", "carol@localhost",
                                   lambda old: RosterItem("carol@localhost", name="Carol"))
        module.changed("alice@localhost", "roster")

    server.call(elsewhere())
    assert "name=\"Carol\"" in iq(alice, f"<query xmlns='{ROSTER}'/>", "g", "get")
