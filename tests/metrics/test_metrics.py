"""Metrics end to end: real traffic over TCP against a real server (logins, a failed one,
messages, a bounce, offline storage, a stream error, limit hits), then ``GET /metrics`` on
its HTTP listener, the exposition text parsed with prometheus_client's own parsers and the
values checked to have moved."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from support import RawClient, RawComponent, component_port, connect

from xmppd.component.stream import handshake_digest
from xmppd.core.config import ConfigError, Limits, Listener

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def scrape(srv, accept: str | None = None) -> tuple[str, str]:
    """(exposition text, content type) of ``GET /metrics`` on ``srv``'s HTTP listener."""
    request = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/metrics",
                                     headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode(), answer.headers["Content-Type"]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(table: dict, name: str, **labels: str) -> float:
    return table.get((name, frozenset(labels.items())), 0.0)


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


@pytest.fixture
def srv(make_server):
    # SQLite storage (the default) so that storage latency is measured; one resource per
    # account so that a second bind hits max_resources_per_account.
    return make_server(users={"alice": "secret", "bob": "secret"}, allow_plain=True,
                       limits=Limits(max_resources_per_account=1,
                                     max_stanza_size_bytes=4096))


def failed_login(srv, password: str = "wrong") -> str:
    client = RawClient(srv.port)
    client.header()
    client.starttls()
    client.header()
    token = base64.b64encode(f"\0alice\0{password}".encode()).decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    answer = client.read_until("</failure>")
    client.send(f"<auth xmlns='{SASL}' mechanism='X-MADE-UP'>AA==</auth>")
    answer += client.read_until("</failure>")
    client.close()
    return answer


def bind_refused(client: RawClient) -> str:
    """Log in as alice and try to bind a second resource; the bind answer."""
    client.header()
    client.starttls()
    client.header()
    token = base64.b64encode(b"\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    client.read_until("<success")
    client.header()
    client.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>other</resource></bind></iq>")
    return client.read_until("</iq>")


def test_traffic_moves_the_metrics(srv):
    before = samples(scrape(srv)[0])

    assert "not-authorized" in failed_login(srv)
    alice = connect(srv, "alice", resource="a")
    bob = connect(srv, "bob", resource="b")
    alice.send("<presence/>")  # to the server: the presence module takes it
    for i in range(5):
        alice.send(f"<message to='bob@localhost/b' type='chat' id='m{i}'><body>{i}</body>"
                   "</message>")
    for i in range(5):
        bob.read_until(f"id=.m{i}.")
    # to nobody: the router answers with a stanza error
    alice.send("<message to='nobody@localhost' type='chat' id='x'><body>?</body></message>")
    alice.read_until("service-unavailable")
    # a second resource of alice: over max_resources_per_account
    second = RawClient(srv.port)
    assert "resource-constraint" in bind_refused(second)
    # bob goes away; a message to him is stored offline
    bob.send("</stream:stream>")
    bob.read_closed()
    alice.send("<message to='bob@localhost' type='chat' id='off'><body>later</body></message>")
    assert wait_for(lambda: value(samples(scrape(srv)[0]), "xmppd_offline_messages") == 1)
    # a stanza over max_stanza_size_bytes: a limit hit and a stream error
    alice.send("<message to='bob@localhost'><body>" + "x" * 5000 + "</body></message>")
    assert "policy-violation" in alice.read_closed()
    second.close()

    after = samples(scrape(srv)[0])

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("xmppd_logins_total", kind="c2s", mechanism="PLAIN", outcome="success") == 3
    assert moved("xmppd_logins_total", kind="c2s", mechanism="PLAIN", outcome="failure") == 1
    # a mechanism nobody offers is a negotiation error, under "other" (not the client's name)
    assert moved("xmppd_logins_total", kind="c2s", mechanism="other", outcome="error") == 1
    assert moved("xmppd_connections_opened_total", kind="c2s") == 4
    # five to bob, and the error answering the message to nobody@ back to alice
    assert moved("xmppd_stanzas_routed_total", kind="message", outcome="delivered") == 6
    # to nobody@ and to bob's bare JID: the message module took both (bounced one, stored
    # the other)
    assert moved("xmppd_stanzas_routed_total", kind="message", outcome="handled") == 2
    assert moved("xmppd_stanzas_routed_total", kind="message", outcome="bounced") == 1
    assert moved("xmppd_stanzas_routed_total", kind="presence", outcome="handled") == 1
    assert moved("xmppd_stanzas_routed_total", kind="iq", outcome="handled") >= 2  # rosters
    assert moved("xmppd_stanza_errors_total", condition="service-unavailable") == 1
    assert moved("xmppd_stream_errors_total", kind="c2s", condition="policy-violation") == 1
    assert moved("xmppd_limit_hits_total", limit="max_stanza_size_bytes") == 1
    assert moved("xmppd_limit_hits_total", limit="max_resources_per_account") == 1
    assert moved("xmppd_received_bytes_total", kind="c2s") > 5000
    assert moved("xmppd_sent_bytes_total", kind="c2s") > 0
    assert value(after, "xmppd_offline_messages") == 1
    assert value(after, "xmppd_offline_accounts") == 1
    # logins read credentials, the offline message was appended: both measured
    assert moved("xmppd_storage_operation_seconds_count", operation="read") > 0
    assert moved("xmppd_storage_operation_seconds_count", operation="append_batch") > 0
    assert value(after, "process_resident_memory_bytes") > 0
    # the scrapes themselves: HTTP connections
    assert moved("xmppd_connections_opened_total", kind="http") >= 1
    assert moved("xmppd_received_bytes_total", kind="http") > 0


def test_connections_and_sessions_are_gauges(srv):
    alice = connect(srv, "alice", resource="a")
    during = samples(scrape(srv)[0])
    assert value(during, "xmppd_connections", kind="c2s") == 1
    assert value(during, "xmppd_sessions", kind="c2s") == 1
    alice.send("</stream:stream>")
    alice.read_closed()
    gone = wait_for(lambda: value(samples(scrape(srv)[0]), "xmppd_connections", kind="c2s") == 0)
    assert gone
    assert value(samples(scrape(srv)[0]), "xmppd_sessions", kind="c2s") == 0


def test_event_loop_lag_is_measured(srv):
    def count() -> float:
        return value(samples(scrape(srv)[0]), "xmppd_event_loop_lag_seconds_count")

    assert wait_for(lambda: count() > 0)


def test_openmetrics_when_the_scraper_asks_for_it(srv):
    connect(srv, "alice").close()
    text, content_type = scrape(srv, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    logins = families["xmppd_logins"]
    assert logins.type == "counter"
    assert any(s.labels == {"kind": "c2s", "mechanism": "PLAIN", "outcome": "success"}
               and s.value >= 1 for s in logins.samples)
    plain, content_type = scrape(srv)
    assert content_type.startswith("text/plain; version=0.0.4")


def test_two_servers_do_not_share_metrics(make_server):
    one = make_server(users={"alice": "secret"}, allow_plain=True)
    two = make_server(users={"alice": "secret"}, allow_plain=True)
    connect(one, "alice").close()
    assert value(samples(scrape(one)[0]), "xmppd_logins_total", kind="c2s",
                 mechanism="PLAIN", outcome="success") == 1
    assert value(samples(scrape(two)[0]), "xmppd_logins_total", kind="c2s",
                 mechanism="PLAIN", outcome="success") == 0


def test_only_allowed_addresses_may_scrape(make_server):
    srv = make_server(modules_options={"metrics": {"allow": ["10.0.0.0/8"]}})
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(srv)
    assert refused.value.code == 403


def test_the_allow_list_is_checked_at_start(make_server):
    with pytest.raises(ConfigError, match="modules.metrics.allow"):
        make_server(modules_options={"metrics": {"allow": ["localhost"]}})


def test_the_endpoint_goes_with_the_module(make_server):
    srv = make_server(modules_disabled=("metrics",))
    with pytest.raises(urllib.error.HTTPError) as missing:
        scrape(srv)
    assert missing.value.code == 404


def test_federation_counts_links_logins_and_remote_stanzas(make_server):
    routes: dict = {}

    def make(domain: str, users: dict):
        return make_server(users=users, domains=(domain,), allow_plain=True,
                           s2s=(Listener("127.0.0.1", 0),), s2s_routes=routes)

    a = make("a.example", {"alice": "secret"})
    b = make("b.example", {"bob": "secret"})
    routes["a.example"] = a.server.addresses["s2s"][0]
    routes["b.example"] = b.server.addresses["s2s"][0]
    alice, bob = RawClient(a.port), RawClient(b.port)
    alice.login("alice", "secret", domain="a.example")
    bob.login("bob", "secret", domain="b.example")
    alice.send("<message to='bob@b.example/raw' type='chat' id='fed'><body>hi</body></message>")
    bob.read_until("id=.fed.")

    at_a, at_b = samples(scrape(a)[0]), samples(scrape(b)[0])
    assert value(at_a, "xmppd_stanzas_routed_total", kind="message", outcome="remote") == 1
    assert value(at_a, "xmppd_s2s_links", direction="out", state="ready") == 1
    assert value(at_a, "xmppd_connections", kind="s2s_out") >= 1
    assert value(at_a, "xmppd_sent_bytes_total", kind="s2s_out") > 0
    # B checked A's dialback key with A (A's inbound stream), then let A in
    assert value(at_b, "xmppd_logins_total", kind="s2s_in", mechanism="dialback",
                 outcome="success") == 1
    assert value(at_b, "xmppd_received_bytes_total", kind="s2s_in") > 0
    assert value(at_b, "xmppd_stanzas_routed_total", kind="message", outcome="delivered") == 1


def test_component_handshakes_and_connected_components(make_server):
    srv = make_server(components={"echo.localhost": "s3cret"},
                      component_listeners=(Listener("127.0.0.1", 0),))
    wrong = RawComponent(component_port(srv))
    stream_id = wrong.open("echo.localhost")
    wrong.send(f"<handshake>{handshake_digest(stream_id, 'wrong')}</handshake>")
    assert "not-authorized" in wrong.read_closed()
    good = RawComponent(component_port(srv))  # kept open: counted as connected
    good.connect("echo.localhost", "s3cret")
    found = samples(scrape(srv)[0])
    for outcome in ("success", "failure"):
        assert value(found, "xmppd_logins_total", kind="component", mechanism="handshake",
                     outcome=outcome) == 1
    assert value(found, "xmppd_components_connected") == 1
    assert value(found, "xmppd_stream_errors_total", kind="component",
                 condition="not-authorized") == 1
