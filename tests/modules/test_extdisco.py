"""XEP-0215 External Service Discovery over a real server: listed services, TURN REST API
credentials, the credentials request, and option checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import pytest
from support import connect

from xmppd.core.config import ConfigError
from xmppd.core.manager import validate_options
from xmppd.modules.extdisco import ExternalServices, turn_credentials

NS = "urn:xmpp:extdisco:2"
SERVICES = [
    {"type": "stun", "host": "stun.example.org", "port": 3478, "transport": "udp"},
    {"type": "turn", "host": "turn.example.org", "port": 3478, "transport": "udp",
     "secret": "s3cret", "name": "relay"},
    {"type": "turns", "host": "turn.example.org", "port": 5349, "transport": "tcp",
     "secret": "s3cret"},
]


@pytest.fixture
def ext_server(make_server):
    return make_server(users={"alice": "secret"}, allow_plain=True,
                       modules_options={"extdisco": {"services": SERVICES,
                                                     "credentials_ttl_s": 3600}})


def ask(client, payload: str, id: str = "x1") -> str:
    client.send(f"<iq type='get' id='{id}' to='localhost'>{payload}</iq>")
    return client.read_until(rf"id=.{id}.*?(</iq>|/>)\s*$|id=.{id}.*?</iq>")


def services_in(text: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'(\w+)="([^"]*)"', m)) for m in re.findall(r"<service ([^>]*)/>", text)]


def test_services_with_time_limited_turn_credentials(ext_server):
    client = connect(ext_server, "alice", roster=False)
    before = int(time.time())
    found = services_in(ask(client, f"<services xmlns='{NS}'/>"))
    assert [s["type"] for s in found] == ["stun", "turn", "turns"]
    stun, turn, turns = found
    assert stun == {"type": "stun", "host": "stun.example.org", "port": "3478",
                    "transport": "udp"}
    assert turn["restricted"] == "1" and turn["name"] == "relay"
    expiry, _, user = turn["username"].partition(":")
    assert user == "alice@localhost" and before + 3600 <= int(expiry) <= int(time.time()) + 3600
    digest = hmac.new(b"s3cret", turn["username"].encode(), hashlib.sha1).digest()
    assert turn["password"] == base64.b64encode(digest).decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", turn["expires"])
    assert turns["transport"] == "tcp" and turns["password"]
    client.close()


def test_type_filter_and_credentials_request(ext_server):
    client = connect(ext_server, "alice", roster=False)
    found = services_in(ask(client, f"<services xmlns='{NS}' type='stun'/>", "x2"))
    assert [s["host"] for s in found] == ["stun.example.org"]
    assert services_in(ask(client, f"<services xmlns='{NS}' type='nothing'/>", "x3")) == []
    answer = ask(client, f"<credentials xmlns='{NS}'><service host='turn.example.org' "
                         "type='turn'/></credentials>", "x4")
    [turn] = services_in(answer)
    assert turn["type"] == "turn" and turn["username"].endswith(":alice@localhost")
    missing = ask(client, f"<credentials xmlns='{NS}'><service host='no.example'/>"
                          "</credentials>", "x5")
    assert "item-not-found" in missing
    bad = ask(client, f"<credentials xmlns='{NS}'/>", "x6")
    assert "bad-request" in bad
    client.close()


def test_disco_feature(ext_server):
    client = connect(ext_server, "alice", roster=False)
    info = ask(client, "<query xmlns='http://jabber.org/protocol/disco#info'/>", "d1")
    assert NS in info
    client.close()


def test_turn_rest_credentials_known_answer():
    # coturn's documented scheme: base64(HMAC-SHA1(secret, "expiry:user"))
    username, password = turn_credentials("north", "alice@example.org", 1700000000)
    assert username == "1700000000:alice@example.org"
    expected = hmac.new(b"north", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


@pytest.mark.parametrize("service, message", [
    ({"type": "ftp", "host": "h"}, "services[0].type"),
    ({"type": "stun"}, "services[0].host"),
    ({"type": "stun", "host": "h", "port": 70000}, "services[0].port"),
    ({"type": "stun", "host": "h", "transport": "sctp"}, "services[0].transport"),
    ({"type": "stun", "host": "h", "secrte": "x"}, "unknown key 'secrte'"),
])
def test_bad_service_options_are_named(service, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_options(ExternalServices, {"services": [service]})
