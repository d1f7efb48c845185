"""XEP-0199 ping and disco#info to one's own account, with and without ``to`` (RFC 6120
§10.3.3): the server answers for the account; to another account it does not."""

from __future__ import annotations

import re

import pytest
from support import RawClient

USERS = {"alice": "secret", "bob": "secret"}
PING = "<ping xmlns='urn:xmpp:ping'/>"
DISCO_INFO = "<query xmlns='http://jabber.org/protocol/disco#info'/>"


@pytest.fixture
def alice(make_server):
    srv = make_server(users=USERS)
    bob = RawClient(srv.port)
    bob.login("bob", "secret", resource="home")  # online: still not answered for
    client = RawClient(srv.port)
    client.login("alice", "secret", resource="phone")
    yield client
    client.close()
    bob.close()


def iq(client: RawClient, payload: str, to: str | None, id: str = "q") -> str:
    attr = "" if to is None else f" to='{to}'"
    client.send(f"<iq type='get' id='{id}'{attr}>{payload}</iq>")
    return client.read_until(rf"<iq[^>]*id=['\"]{id}['\"][^>]*(/>|>.*?</iq>)").replace('"', "'")


@pytest.mark.parametrize("to", [None, "alice@localhost", "Alice@LOCALHOST"],
                         ids=["no-to", "own-bare", "own-bare-unnormalized"])
def test_ping_to_own_account_is_answered(alice, to):
    reply = iq(alice, PING, to)
    assert "type='result'" in reply, reply
    assert "to='alice@localhost/phone'" in reply


@pytest.mark.parametrize("to", ["bob@localhost", "nobody@localhost"])
def test_ping_to_another_account_is_service_unavailable(alice, to):
    """Whether the account exists or not, and whether it is online or not: no oracle."""
    reply = iq(alice, PING, to)
    assert "type='error'" in reply and "<service-unavailable" in reply, reply


@pytest.mark.parametrize("to", [None, "alice@localhost", "Alice@LOCALHOST"],
                         ids=["no-to", "own-bare", "own-bare-unnormalized"])
def test_disco_info_of_own_account(alice, to):
    reply = iq(alice, DISCO_INFO, to)
    assert "type='result'" in reply, reply
    assert re.search(r"<identity category='account' type='registered'", reply), reply


def test_disco_info_of_another_account_is_service_unavailable(alice):
    reply = iq(alice, DISCO_INFO, "bob@localhost")
    assert "<service-unavailable" in reply, reply


def test_ping_to_the_server_still_works(alice):
    assert "type='result'" in iq(alice, PING, "localhost")
