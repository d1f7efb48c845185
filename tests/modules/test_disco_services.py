"""Services hosted by modules (MUC, pubsub) in the server's disco#items through the ``disco``
service's ``add_item`` (gone on unload), and identities modules add to accounts' disco#info
(PEP's ``pubsub/pep``)."""

from __future__ import annotations

from support import connect
from test_roster import iq

ITEMS = "<query xmlns='http://jabber.org/protocol/disco#items'/>"
INFO = "<query xmlns='http://jabber.org/protocol/disco#info'/>"


def unload(srv, name: str) -> None:
    async def run() -> None:
        srv.server.modules.unload(name)

    srv.call(run())


def test_muc_and_pubsub_are_listed_and_unlisted_on_unload(server):
    alice = connect(server, "alice")
    items = iq(alice, ITEMS, "i1", "get", "localhost")
    assert 'jid="conference.localhost" name="Chatrooms"' in items
    assert 'jid="pubsub.localhost"' in items
    unload(server, "pubsub")
    items = iq(alice, ITEMS, "i2", "get", "localhost")
    assert "pubsub.localhost" not in items and "conference.localhost" in items
    unload(server, "muc")
    items = iq(alice, ITEMS, "i3", "get", "localhost")
    assert "conference.localhost" not in items and "pubsub.localhost" not in items


def test_services_are_listed_only_by_their_domain(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True,
                      domains=("localhost", "other.test"),
                      modules_options={"pubsub": {"host": "ps.example"}})
    alice = connect(srv, "alice")
    items = iq(alice, ITEMS, "i1", "get", "localhost")
    assert "conference.localhost" in items and "conference.other.test" not in items
    assert 'jid="ps.example"' in items  # a configured host: every served domain lists it
    items = iq(alice, ITEMS, "i2", "get", "other.test")
    assert "conference.other.test" in items and "conference.localhost" not in items
    assert 'jid="ps.example"' in items


def test_components_are_listed(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True,
                      components={"gw.localhost": "s3cret"})
    alice = connect(srv, "alice")
    assert 'jid="gw.localhost"' in iq(alice, ITEMS, "i", "get", "localhost")


def test_account_has_the_pep_identity_while_pep_is_loaded(server):
    alice = connect(server, "alice")
    info = iq(alice, INFO, "d1", "get", "alice@localhost")
    assert 'category="account" type="registered"' in info
    assert 'category="pubsub" type="pep"' in info
    assert 'category="pubsub"' not in iq(alice, INFO, "d2", "get", "localhost")
    unload(server, "pep")
    info = iq(alice, INFO, "d3", "get", "alice@localhost")
    assert 'category="pubsub"' not in info and 'type="registered"' in info
