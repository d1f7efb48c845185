"""External components (XEP-0114) against a live server, with a raw component client."""

from __future__ import annotations

import pytest
from support import RawClient, RawComponent, component_port

from xmppd.component.stream import handshake_digest
from xmppd.core.config import Listener


@pytest.fixture
def server(make_server):
    return make_server(users={"alice": "secret"}, allow_plain=True,
                       components={"echo.localhost": "s3cret", "bridge": "other"},
                       component_listeners=(Listener("127.0.0.1", 0),))


def login(srv) -> RawClient:
    client = RawClient(srv.port)
    client.login("alice", "secret")
    return client


def test_handshake_digest_is_sha1_of_id_and_secret():
    import hashlib

    assert handshake_digest("3BF96D32", "secret") == hashlib.sha1(b"3BF96D32secret").hexdigest()


def test_component_exchanges_stanzas_with_a_local_user(server):
    comp = RawComponent(component_port(server))
    comp.connect("echo.localhost", "s3cret")
    alice = login(server)
    alice.send("<message to='bot@echo.localhost' id='c1'><body>ping</body></message>")
    got = comp.read_until("</message>")
    assert "from=\"alice@localhost/raw\"" in got and "<body>ping</body>" in got
    assert "jabber:client" not in got  # written in the component namespace
    comp.send("<message from='bot@echo.localhost' to='alice@localhost/raw'><body>pong</body></message>")
    got = alice.read_until("</message>")
    assert "pong" in got and "from=\"bot@echo.localhost\"" in got
    # the short config name is a subdomain of the first domain
    other = RawComponent(component_port(server))
    other.connect("bridge.localhost", "other")
    comp.close()
    other.close()
    alice.close()


def test_wrong_secret_is_refused(server):
    comp = RawComponent(component_port(server))
    stream_id = comp.open("echo.localhost")
    comp.send(f"<handshake>{handshake_digest(stream_id, 'wrong')}</handshake>")
    assert "not-authorized" in comp.read_closed()


def test_unknown_component_domain_is_refused(server):
    comp = RawComponent(component_port(server))
    comp.open("nope.localhost")
    assert "host-unknown" in comp.read_closed()


def test_component_cannot_send_from_another_domain(server):
    comp = RawComponent(component_port(server))
    comp.connect("echo.localhost", "s3cret")
    comp.send("<message from='admin@localhost' to='alice@localhost'><body>x</body></message>")
    assert "invalid-from" in comp.read_closed()


def test_stanzas_before_handshake_are_refused(server):
    comp = RawComponent(component_port(server))
    comp.open("echo.localhost")
    comp.send("<message from='bot@echo.localhost' to='alice@localhost'/>")
    assert "not-authorized" in comp.read_closed()


def test_disconnected_component_bounces_and_second_connection_conflicts(server):
    alice = login(server)
    alice.send("<message to='bot@echo.localhost' id='off'><body>?</body></message>")
    got = alice.read_until("</message>")
    assert "service-unavailable" in got and "off" in got
    first = RawComponent(component_port(server))
    first.connect("echo.localhost", "s3cret")
    second = RawComponent(component_port(server))
    stream_id = second.open("echo.localhost")
    second.send(f"<handshake>{handshake_digest(stream_id, 's3cret')}</handshake>")
    assert "conflict" in second.read_closed()
    first.close()
    alice.close()
