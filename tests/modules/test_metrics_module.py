"""The metrics module's address check (the endpoint itself: tests/metrics/)."""

from __future__ import annotations

import ipaddress

from xmppd.modules.metrics import allowed

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def test_loopback_is_allowed_in_both_families():
    assert allowed(("127.0.0.1", 5000), LOOPBACK)
    assert allowed(("::1", 5000, 0, 0), LOOPBACK)
    assert allowed(("::ffff:127.0.0.2", 5000, 0, 0), LOOPBACK)  # IPv4-mapped


def test_other_addresses_are_not():
    assert not allowed(("10.1.2.3", 5000), LOOPBACK)
    assert not allowed(("2001:db8::1", 5000, 0, 0), LOOPBACK)
    assert not allowed(None, LOOPBACK)
    assert not allowed(("not an address", 1), LOOPBACK)
