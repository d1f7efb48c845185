"""The s2s manager: outbound links by domain pair, the ``route/remote`` handler, and the
policy shared by all s2s streams of one server.

It is built from narrow dependencies (the router, the dialback secret, the connection
accounting, :class:`S2SSettings`, the TLS policy and a resolver), never from the server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xmppd.s2s.certs import TLSPolicy
from xmppd.s2s.common import domain_of, log
from xmppd.s2s.outbound import OutboundLink
from xmppd.s2s.resolver import Resolver
from xmppd.xml.element import Element

if TYPE_CHECKING:
    from xmppd.core.config import Config, Limits
    from xmppd.s2s.inbound import S2SInStream


@dataclass(frozen=True)
class S2SSettings:
    """The ``[s2s]`` values the streams use."""

    default_domain: str
    limits: Limits
    timeout: float = 30.0
    idle_timeout: float = 600.0
    max_queue: int = 1000
    require_encryption: bool = True
    require_valid: frozenset[str] = frozenset()
    dialback: bool = True
    bidi: bool = True

    @classmethod
    def from_config(cls, cfg: Config) -> S2SSettings:
        return cls(
            default_domain=cfg.domains[0], limits=cfg.limits, timeout=cfg.s2s_timeout_s,
            idle_timeout=cfg.s2s_idle_timeout_s, max_queue=cfg.s2s_max_queue,
            require_encryption=cfg.s2s_require_encryption,
            require_valid=frozenset(d.lower() for d in cfg.s2s_require_valid_certificates),
            dialback=cfg.s2s_dialback, bidi=cfg.s2s_bidi,
        )


def tls_policy(cfg: Config) -> TLSPolicy:
    return TLSPolicy(cfg.domains, cfg.certificate_for, cfg.s2s_ca_file, cfg.s2s_use_system_ca)


def resolver(cfg: Config) -> Resolver:
    return Resolver(cfg.s2s_routes, nameservers=list(cfg.s2s_nameservers) or None,
                    timeout=cfg.s2s_dns_timeout_s)


class S2SManager:
    """Outbound links by (local, remote) domain pair, and inbound bidirectional streams
    (XEP-0288) that carry our stanzas back to their initiator."""

    def __init__(
        self,
        router: Any,
        secret: bytes,
        settings: S2SSettings,
        tls: TLSPolicy,
        resolver: Resolver,
        connections: Any = None,
    ) -> None:
        self.router = router
        self.secret = secret
        self.connections = connections
        self.settings = settings
        self.tls = tls
        self.resolver = resolver
        self.limits = settings.limits
        self.default_domain = settings.default_domain
        self.timeout = settings.timeout
        self.idle_timeout = settings.idle_timeout
        self.max_queue = settings.max_queue
        self.require_encryption = settings.require_encryption
        self.require_valid = settings.require_valid
        self.loop = asyncio.get_event_loop()
        self.links: dict[tuple[str, str], OutboundLink] = {}
        #: (local, remote) -> an inbound stream the peer opened with bidi, authorized for
        #: (remote, local): our stanzas from local to remote go over it.
        self.bidi_in: dict[tuple[str, str], S2SInStream] = {}
        self.extra_domains: set[str] = set()  # e.g. external components' domains

    def served(self, domain: str) -> bool:
        return domain in self.router.hosts or domain in self.extra_domains

    def link(self, local: str, remote: str) -> OutboundLink:
        link = self.links.get((local, remote))
        if link is None or link.done:
            link = self.links[(local, remote)] = OutboundLink(self, local, remote)
        return link

    def forget(self, link: OutboundLink) -> None:
        if self.links.get((link.local, link.remote)) is link:
            del self.links[(link.local, link.remote)]

    def bidi_attach(self, local: str, remote: str, stream: S2SInStream) -> None:
        """An inbound bidi stream authorized for (remote, local) now carries local -> remote."""
        log.info("s2s %s -> %s: over the bidirectional stream from %s", local, remote, stream.peer)
        self.bidi_in[(local, remote)] = stream

    def bidi_detach(self, stream: S2SInStream) -> None:
        for pair in [p for p, s in self.bidi_in.items() if s is stream]:
            del self.bidi_in[pair]

    def route(self, stanza: Element, origin: object) -> bool:
        """``route/remote``: send a stanza to its remote domain (True: taken care of)."""
        remote, local = domain_of(stanza.get("to")), domain_of(stanza.get("from"))
        if remote is None or local is None or not self.served(local) or self.served(remote):
            return False
        stream = self.bidi_in.get((local, remote))
        if stream is not None and stream.usable:
            stream.send_stanza(stanza)
            return True
        self.link(local, remote).send(stanza)
        return True

    async def verify(self, local: str, remote: str, stream_id: str, key: str) -> bool:
        """Check a dialback key ``remote`` gave us with ``remote``'s authoritative server."""
        fut = self.link(local, remote).request_verify(stream_id, key)
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            return False

    def link_states(self) -> dict[tuple[str, str], int]:
        """For the metrics: links by (direction, state)."""
        ready = sum(1 for link in self.links.values() if link.ready)
        return {("out", "ready"): ready, ("out", "connecting"): len(self.links) - ready,
                ("in", "bidi"): len(self.bidi_in)}

    def close_all(self, *_args: object) -> None:
        for link in list(self.links.values()):
            link.close()
