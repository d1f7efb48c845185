"""Prometheus/OpenMetrics endpoint: ``GET /metrics`` on the HTTP listener.

The counting is not here: the core keeps plain counters on the objects that count (router,
connection accounting, storage), modules report their gauges through ``api.gauge``, and
:class:`xmppd.metrics.collector.ServerMetrics` renders them.  This module only serves the
text, in the OpenMetrics format when the scraper's ``Accept`` asks for it, to the addresses
in ``allow`` (loopback by default; others get ``403``), as Prosody's mod_http_openmetrics.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.transport.connections import address_text
from xmppd.transport.http import HTTPRequest, Response

PATH = "/metrics"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: Any) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an address or network (CIDR)"
    return None


def allowed(peer: tuple[str, int] | None, networks: tuple[Network, ...]) -> bool:
    """Whether ``peer``'s address is in one of ``networks`` (an IPv4-mapped IPv6 address
    counts as its IPv4 address)."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer[0].partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class Metrics(Module):
    """Serves the server's metrics at ``/metrics`` on the HTTP listener."""

    name = "metrics"
    workers_safe = True
    xeps = ()
    options = {
        "allow": Option(list, ("127.0.0.0/8", "::1/128"), "addresses or networks (CIDR) "
                        "that may read /metrics; others are answered 403", item=str,
                        check=_networks),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.networks = tuple(ipaddress.ip_network(n, strict=False)
                              for n in api.options["allow"])
        api.add_http_route(PATH, self.serve, methods=("GET",))

    async def serve(self, request: HTTPRequest) -> Response:
        if not allowed(request.peer, self.networks):
            self.api.log.info("metrics refused to %s: not in modules.metrics.allow",
                              address_text(request.peer))
            return Response(403, b"forbidden\n", content_type="text/plain; charset=utf-8")
        body, content_type = await self.api.metrics.render(request.headers.get("accept"))
        return Response(200, body, content_type=content_type)
