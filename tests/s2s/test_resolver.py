"""The s2s resolver against real DNS messages (a DNS server on loopback) and static routes."""

from __future__ import annotations

import asyncio

import pytest
from prosody import DNSServer

from xmppd.s2s.resolver import ResolutionError, Resolver, Target, _srv_order


def resolve(dns_server: DNSServer, domain: str, routes=None) -> list[Target]:
    resolver = Resolver(routes or {}, nameservers=[dns_server.address], timeout=2)
    return asyncio.run(resolver.resolve(domain))


def test_static_route_wins_over_dns():
    with DNSServer({("_xmpp-server._tcp.example.org", "SRV"): ["0 0 5269 xmpp.example.org."]}) as d:
        assert resolve(d, "example.org", {"example.org": ("127.0.0.9", 15269)}) == [
            Target("127.0.0.9", 15269)
        ]
        assert d.queries == []


def test_srv_records_merge_direct_tls_first_on_equal_priority():
    records = {
        ("_xmpp-server._tcp.example.org", "SRV"): ["5 0 5269 a.example.org.", "10 0 5270 b.example.org."],
        ("_xmpps-server._tcp.example.org", "SRV"): ["5 0 5223 a.example.org."],
        ("a.example.org", "A"): ["127.0.0.2"],
        ("a.example.org", "AAAA"): ["::1"],
        ("b.example.org", "A"): ["127.0.0.3"],
    }
    with DNSServer(records) as d:
        got = resolve(d, "example.org")
    assert got == [
        Target("127.0.0.2", 5223, True), Target("::1", 5223, True),
        Target("127.0.0.2", 5269), Target("::1", 5269),
        Target("127.0.0.3", 5270),
    ]


def test_no_srv_falls_back_to_the_domain_on_5269():
    with DNSServer({("example.net", "A"): ["127.0.0.4"]}) as d:
        assert resolve(d, "example.net") == [Target("127.0.0.4", 5269)]


def test_srv_dot_target_means_no_service():
    with DNSServer({("_xmpp-server._tcp.example.com", "SRV"): ["0 0 0 ."]}) as d:
        with pytest.raises(ResolutionError):
            resolve(d, "example.com")


def test_unknown_domain_without_any_record_fails():
    with DNSServer({}) as d:
        with pytest.raises(ResolutionError):
            resolve(d, "nonexistent.invalid")


def test_system_resolver_fallback_for_localhost():
    with DNSServer({}) as d:
        got = resolve(d, "x.example", {"x.example": ("localhost", 1234)})
    assert Target("127.0.0.1", 1234) in got


def test_weighted_order_keeps_every_target_once():
    records = [(0, w, False, Target(f"h{w}", 1)) for w in (0, 1, 50, 100)]
    for _ in range(50):
        order = _srv_order(list(records))
        assert sorted(t.host for t in order) == ["h0", "h1", "h100", "h50"]
