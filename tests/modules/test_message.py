"""The message module (RFC 6121 §8.5.2) end to end: bare-JID delivery over real sockets."""

from __future__ import annotations

from support import RawClient

USERS = {"alice": "secret", "bob": "secret"}


def test_without_presence_a_bare_jid_message_reaches_the_online_user(make_server):
    # Presence disabled: nobody sends available presence, yet bob is connected; the
    # message must be delivered, not stored offline.
    srv = make_server(users=USERS, allow_plain=True,
                      modules_disabled=("presence", "offline", "blocking"))
    bob = RawClient(srv.port)
    bob.login("bob", "secret", resource="phone")
    alice = RawClient(srv.port)
    alice.login("alice", "secret", resource="pc")
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>")
    got = bob.read_until("</message>")
    assert "<body>hi</body>" in got and "from=\"alice@localhost/pc\"" in got.replace("'", '"')
    alice.close()
    bob.close()


def test_with_presence_only_available_resources_get_bare_jid_messages(server):
    bob_idle = RawClient(server.port)
    bob_idle.login("bob", "secret", resource="idle")  # bound, never available
    bob = RawClient(server.port)
    bob.login("bob", "secret", resource="phone")
    bob.send("<presence/>")
    bob.read_until("<presence")  # its own presence, reflected
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="pc")
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>one</body></message>")
    assert "<body>one</body>" in bob.read_until("</message>")
    bob_idle.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "<body>" not in bob_idle.read_until("id=.p1.")
    for client in (alice, bob, bob_idle):
        client.close()
