"""XEP-0157 contact addresses in the server's disco#info (a serverinfo data form)."""

from __future__ import annotations

import re

import pytest
from support import RawClient

from xmppd.core.config import Config, ConfigError
from xmppd.core.manager import plan

INFO = "<iq type='get' id='i1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
ADDRESSES = {"abuse": ["mailto:abuse@localhost", "xmpp:abuse@localhost"],
             "security": ["https://localhost/security"]}


def disco_info(server) -> str:
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send(INFO)
    try:
        return client.read_until(r"<iq[^>]*id=.i1.[^>]*>.*?</iq>")
    finally:
        client.close()


def test_disco_info_carries_the_serverinfo_form(make_server):
    server = make_server(users={"alice": "secret"}, allow_plain=True,
                         modules_options={"contact": ADDRESSES})
    reply = disco_info(server)
    form = re.search(r"<x xmlns=.jabber:x:data. type=.result.>.*?</x>", reply).group(0)
    assert re.search(r"<field var=.FORM_TYPE. type=.hidden.><value>"
                     r"http://jabber.org/network/serverinfo</value></field>", form)
    assert re.search(r"<field var=.abuse-addresses.[^>]*><value>mailto:abuse@localhost</value>"
                     r"<value>xmpp:abuse@localhost</value></field>", form)
    assert "<value>https://localhost/security</value>" in form
    assert "support-addresses" not in form  # types with no address are left out
    assert "<feature var='http://jabber.org/protocol/disco#info'/>" in reply.replace('"', "'")


def test_no_addresses_no_form(server):
    assert "jabber:x:data" not in disco_info(server)


def test_without_disco_the_module_loads_and_does_nothing(make_server):
    server = make_server(users={"alice": "secret"}, allow_plain=True,
                         modules_enabled=("contact", "ping"), modules_options={"contact": ADDRESSES})
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send(INFO)
    assert "service-unavailable" in client.read_until(r"</iq>")
    client.close()


@pytest.mark.parametrize("value, message", [
    (["abuse@localhost"], "not a URI"),
    ("mailto:a@b", "expected a list"),
    ([1], "not a URI"),
])
def test_addresses_are_validated(value, message):
    with pytest.raises(ConfigError, match=rf"modules\.contact\.abuse: .*{message}"):
        plan(Config(modules_options={"contact": {"abuse": value}}))


def test_unknown_kind_is_rejected():
    with pytest.raises(ConfigError, match="modules.contact.abus"):
        plan(Config(modules_options={"contact": {"abus": ["mailto:a@b"]}}))
