"""Where to connect for a remote XMPP domain (RFC 6120 §3.2, XEP-0368).

Order: the static route map of the config (private deployments, tests); else the DNS SRV
records ``_xmpps-server._tcp`` (direct TLS) and ``_xmpp-server._tcp`` (STARTTLS), merged by
priority with direct TLS first on a tie; else the domain itself on port 5269.  Host names
are resolved to addresses with dnspython (A and AAAA), falling back to the system resolver
(``/etc/hosts``, e.g. ``localhost``) when DNS has no answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

log = logging.getLogger(__name__)

DEFAULT_PORT = 5269
_SERVICES = (("_xmpps-server._tcp.", True), ("_xmpp-server._tcp.", False))


@dataclass(frozen=True)
class Target:
    """One address to try: ``host`` is an IP address once resolved."""

    host: str
    port: int
    direct_tls: bool = False


class ResolutionError(Exception):
    """The domain has no usable address (its SRV record says no service, or no record)."""


class Resolver:
    """Resolves remote domains to connection targets.

    ``routes`` is read at every lookup (so a test or an admin may add routes at run time);
    ``nameservers`` overrides ``/etc/resolv.conf`` as ``[(ip, port), ...]``
    (``[s2s] nameservers``); ``timeout`` bounds each lookup (``[s2s] dns_timeout_s``).
    """

    def __init__(
        self,
        routes: Mapping[str, tuple[str, int]] | None = None,
        nameservers: list[tuple[str, int]] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.routes = routes if routes is not None else {}
        self.timeout = timeout
        self._dns: dns.asyncresolver.Resolver | None
        try:
            self._dns = dns.asyncresolver.Resolver(configure=nameservers is None)
        except (dns.resolver.NoResolverConfiguration, OSError):
            log.warning("no DNS resolver configuration: only static s2s routes will work")
            self._dns = None
        if self._dns is not None:
            if nameservers:  # each with its own port (``[s2s] nameservers``)
                self._dns.nameservers = [dns.nameserver.Do53Nameserver(ip, port)
                                         for ip, port in nameservers]
            self._dns.lifetime = timeout

    async def resolve(self, domain: str) -> list[Target]:
        """The addresses to try for ``domain``, in order; raises :class:`ResolutionError`."""
        route = self.routes.get(domain)
        if route is not None:
            return await self._addresses([Target(route[0], route[1])])
        services = await self.srv(domain)
        if services is None:
            services = [Target(domain, DEFAULT_PORT)]
        elif not services:
            raise ResolutionError(f"{domain} offers no XMPP server service")
        targets = await self._addresses(services)
        if not targets:
            raise ResolutionError(f"no address found for {domain}")
        return targets

    async def srv(self, domain: str) -> list[Target] | None:
        """SRV targets in connection order; None when there are no SRV records at all,
        an empty list when the records say the service is not offered (target ".")."""
        if self._dns is None:
            return None
        lookups = [self._srv(prefix + domain) for prefix, _tls in _SERVICES]
        answers = await asyncio.gather(*lookups)
        if all(a is None for a in answers):
            return None
        records = []
        for (_prefix, tls), answer in zip(_SERVICES, answers, strict=True):
            for rr in answer or ():
                target = rr.target.to_text(omit_final_dot=True)
                if target in ("", "."):
                    continue
                records.append((rr.priority, rr.weight, not tls, Target(target, rr.port, tls)))
        return _srv_order(records)

    async def _srv(self, name: str):
        try:
            return list(await self._dns.resolve(name, "SRV"))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return None
        except dns.exception.Timeout:
            log.info("SRV lookup of %s timed out", name)
            return None

    async def _addresses(self, services: list[Target]) -> list[Target]:
        out: list[Target] = []
        for service in services:
            for ip in await self.addresses(service.host):
                out.append(Target(ip, service.port, service.direct_tls))
        return out

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host`` (an IP literal is returned as is)."""
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        found: list[str] = []
        if self._dns is not None:
            for rdtype in ("A", "AAAA"):
                try:
                    found += [rr.address for rr in await self._dns.resolve(host, rdtype)]
                except (dns.exception.DNSException, OSError):
                    continue
        if found:
            return found
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return []
        return list(dict.fromkeys(info[4][0] for info in infos))


def _srv_order(records: list[tuple[int, int, bool, Target]]) -> list[Target]:
    """RFC 2782 order: by priority (direct TLS first on a tie, XEP-0368), then a weighted
    random pick within each priority group."""
    out: list[Target] = []
    groups: dict[tuple[int, bool], list[tuple[int, Target]]] = {}
    for priority, weight, starttls, target in records:
        groups.setdefault((priority, starttls), []).append((weight, target))
    for key in sorted(groups):
        pool = groups[key]
        while pool:
            total = sum(w for w, _ in pool)
            pick = random.uniform(0, total) if total else 0
            for i, (weight, target) in enumerate(pool):
                pick -= weight
                if pick <= 0 or i == len(pool) - 1:
                    out.append(target)
                    del pool[i]
                    break
    return out
