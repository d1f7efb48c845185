"""Interests: the router skips the module hooks of a message that no module can act on
(no payload a module declared, accounts every gated module declared quiet), over real
sockets with the default modules.  Each test shows a chain skipped, then what ends the
quiet (a block list, carbons, an inactive client, a payload) making the modules act again
at once, then the quiet back."""

from __future__ import annotations

import pytest
from support import connect
from test_blocking import NS as BLOCKING
from test_csi import wait_held
from test_mam import ping
from test_roster import iq

from xmppd.core.hooks import Hooks, Interest
from xmppd.jid import JID
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS

CARBONS = "urn:xmpp:carbons:2"
CSI = "urn:xmpp:csi:0"
EVENTS = ("message/outbound", "message/full", "stanza/inbound")


def skipped(server) -> dict[str, int]:
    async def read() -> dict[str, int]:
        return {e: server.server.hooks.skips(e) for e in EVENTS}
    return server.call(read())


def chat(client, to: str, id: str, payload: str = "<body>hi</body>", attrs: str = "") -> None:
    client.send(f"<message to='{to}' type='chat' id='{id}'{attrs}>{payload}</message>")


def delivered(server, send) -> tuple[dict[str, int], dict[str, int]]:
    """The skip counters before and after ``send()`` (which waits for the delivery)."""
    before = skipped(server)
    send()
    return before, skipped(server)


def grew(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {e for e in EVENTS if after[e] > before[e]}


def test_a_plain_message_skips_every_chain(server):
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")

    def send() -> None:
        chat(alice, "bob@localhost/b", "m1")
        got = bob.read_until("</message>")
        assert '<message to="bob@localhost/b" type="chat" id="m1" from="alice@localhost/a">' \
            '<body>hi</body></message>' in got

    assert grew(*delivered(server, send)) == set(EVENTS)


def test_a_block_list_ends_the_quiet_until_it_is_empty(server):
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")
    assert "result" in iq(bob, f"<block xmlns='{BLOCKING}'><item jid='alice@localhost'/></block>",
                          "b1")

    chat(alice, "bob@localhost/b", "m2")  # refused at once: bob's filters ran
    assert "service-unavailable" in alice.read_until("</message>")
    assert "<message" not in ping(bob)
    assert "result" in iq(bob, f"<unblock xmlns='{BLOCKING}'/>", "u1")

    def received() -> None:
        chat(alice, "bob@localhost/b", "m3")
        assert "id=\"m3\"" in bob.read_until("</message>")

    assert grew(*delivered(server, received)) == set(EVENTS)
    # the sender's own list: blocked outbound is answered with not-acceptable at once
    assert "result" in iq(alice, f"<block xmlns='{BLOCKING}'><item jid='bob@localhost'/></block>",
                          "b2")
    chat(alice, "bob@localhost/b", "m4")
    assert "<blocked xmlns=\"urn:xmpp:blocking:errors\"/>" in alice.read_until("</message>")
    assert "<message" not in ping(bob, "p2")


def test_carbons_enabled_on_another_resource_end_the_quiet(server):
    one, two = connect(server, "alice", "one"), connect(server, "alice", "two")
    bob = connect(server, "bob", "b")

    def to_one(id: str) -> None:
        chat(bob, "alice@localhost/one", id)
        one.read_until("</message>")

    assert grew(*delivered(server, lambda: to_one("m1"))) == set(EVENTS)
    assert "<received" not in ping(two)
    two.send(f"<iq type='set' id='e'><enable xmlns='{CARBONS}'/></iq>")
    two.read_until("id=.e.")
    assert "message/full" not in grew(*delivered(server, lambda: to_one("m2")))
    assert f'<received xmlns="{CARBONS}">' in two.read_until("</received>")
    chat(one, "bob@localhost/b", "m3")  # alice's sent copy too
    assert f'<sent xmlns="{CARBONS}">' in two.read_until("</sent>")
    two.send(f"<iq type='set' id='d'><disable xmlns='{CARBONS}'/></iq>")
    two.read_until("id=.d.")
    assert grew(*delivered(server, lambda: to_one("m4"))) == set(EVENTS)
    assert "<received" not in ping(two, "p2")


def test_an_inactive_client_ends_the_quiet_until_active(server):
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")
    bob.send(f"<inactive xmlns='{CSI}'/>")
    ping(bob, "i")
    state = "<active xmlns='http://jabber.org/protocol/chatstates'/>"
    before = skipped(server)
    chat(alice, "bob@localhost/b", "s1", state)
    assert len(wait_held(server, 1, "bob@localhost/b")) == 1  # CSI held it: it ran
    # alice (the sender) is quiet: her chain was skipped, bob's ran
    assert grew(before, skipped(server)) == {"message/outbound", "message/full"}
    bob.send(f"<active xmlns='{CSI}'/>")
    assert "s1" in bob.read_until("id=.s1.[^>]*>.*?</message>")

    def received() -> None:
        chat(alice, "bob@localhost/b", "s2", state)
        assert "s2" in bob.read_until("</message>")

    assert grew(*delivered(server, received)) == set(EVENTS)


@pytest.mark.parametrize("payload", [
    f"<received xmlns='{CARBONS}'><forwarded xmlns='urn:xmpp:forward:0'/></received>",
    "<received xmlns='urn:xmpp:carbons&#58;2'/>",  # a reference: the tree is asked
    "<c:sent/>",  # a prefix declared on the stanza
])
def test_payloads_a_module_declared_still_reach_it(server, payload):
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")

    def forged() -> None:
        chat(alice, "bob@localhost/b", "f1", payload + "<body>x</body>",
             f" xmlns:c='{CARBONS}'")
        got = bob.read_until("</message>")
        assert "received" not in got and "sent" not in got and "<body>x</body>" in got

    before, after = delivered(server, forged)
    assert "message/full" not in grew(before, after)  # the forgery was removed
    assert grew(*delivered(server, lambda: (chat(alice, "bob@localhost/b", "f2"),
                                            bob.read_until("</message>")))) == set(EVENTS)


def test_private_is_removed_from_a_quiet_account_message(server):
    alice, bob = connect(server, "alice", "a"), connect(server, "bob", "b")
    chat(alice, "bob@localhost/b", "p1", f"<body>x</body><private xmlns='{CARBONS}'/>")
    assert "private" not in bob.read_until("</message>")
    assert grew(*delivered(server, lambda: (chat(alice, "bob@localhost/b", "p2"),
                                            bob.read_until("</message>")))) == set(EVENTS)


# -- the gate itself ------------------------------------------------------------------------


def test_an_undeclared_handler_turns_the_gate_off_until_removed():
    hooks = Hooks()
    bit = hooks.new_bit()
    hooks.hook("message/full", lambda *a: None, interest=Interest(
        payloads=("urn:p",), account=True), bit=bit)
    plain = Element("message", CLIENT_NS, {}, [Element("body", CLIENT_NS, {}, ["hi"])])
    marked = Element("message", CLIENT_NS, {}, [Element("x", "urn:p")])
    bare = JID("alice@localhost")
    assert not hooks.idle("message/full", plain, bare)  # not declared quiet
    hooks.set_quiet(bare, bit, True)
    assert hooks.idle("message/full", plain, bare)
    assert not hooks.idle("message/full", marked, bare)  # its payload
    undo = hooks.hook("message/full", lambda *a: None)
    assert not hooks.idle("message/full", plain, bare)
    undo()
    assert hooks.idle("message/full", plain, bare)
    hooks.forget_bit(bit)
    assert not hooks.idle("message/full", plain, bare) and not hooks.quiet
    with pytest.raises(ValueError):
        hooks.hook("stanza/inbound", print, interest=Interest(account=True))


def test_the_message_gate_folds_the_three_chains_and_follows_them():
    hooks = Hooks()
    assert hooks.message_gate == (0, 0, frozenset(), ())  # no handlers: nothing can act
    out, full, inbound = hooks.new_bit(), hooks.new_bit(), hooks.new_bit()
    hooks.hook("message/outbound", print, interest=Interest(("urn:a",), account=True), bit=out)
    hooks.hook("message/full", print, interest=Interest(("urn:b",), account=True), bit=full)
    undo = hooks.hook("stanza/inbound", print, interest=Interest(account=True), bit=inbound)
    assert hooks.message_gate == (out, full | inbound, frozenset({"urn:a", "urn:b"}),
                                  (b"urn:a", b"urn:b"))
    undo()
    assert hooks.message_gate == (out, full, frozenset({"urn:a", "urn:b"}),
                                  (b"urn:a", b"urn:b"))
    undo = hooks.hook("stanza/inbound", print)  # no interest: each chain checked alone
    assert hooks.message_gate is None
    undo()
    assert hooks.message_gate is not None
    hooks.hook("presence/outbound", print)  # not on a message's way
    assert hooks.message_gate is not None


def test_handlers_need_not_be_hashable():
    class Unhashable:
        __hash__ = None

        def handle(self, *args):
            return False

    hooks, bare = Hooks(), JID("alice@localhost")
    plain = Element("message", CLIENT_NS)
    undo = hooks.hook("stanza/inbound", Unhashable().handle, interest=Interest(("urn:p",)))
    assert hooks.idle("stanza/inbound", plain, bare)
    hooks.hook("stanza/inbound", Unhashable().handle)
    assert not hooks.idle("stanza/inbound", plain, bare)
    undo()
    assert hooks.handlers("stanza/inbound")


def test_quiet_marks_go_with_the_last_session_and_the_module(server):
    alice = connect(server, "alice", "a")
    bare = JID("alice@localhost")

    async def marks() -> int:
        return server.server.hooks.quiet.get(bare, 0)

    assert server.call(marks())  # blocking, carbons and csi declared alice quiet at bind
    alice.send("</stream:stream>")
    alice.read_closed()

    async def gone() -> bool:
        return server.server.router.sessions.count(bare) == 0

    assert server.call(gone())
    assert server.call(marks()) == 0
