"""Client-to-server connections: the asyncio shell that carries a client stream.

:class:`C2SStream` owns the socket side only: the shared :class:`XMLStream` flow control,
the TLS handshake and the authentication timeout.  Everything said on the stream is decided
by the sans-IO :class:`~xmppd.c2s.negotiation.ClientNegotiation` until the resource is bound
(then it is dropped), and by :func:`~xmppd.c2s.stanzas.client_stanza` after.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from xmppd.c2s.negotiation import ClientNegotiation, ClientPolicy, _addr, stream_extension
from xmppd.c2s.stanzas import client_stanza
from xmppd.transport.stream import XMLStream, limits_kwargs, plain_send
from xmppd.transport.tls import channel_bindings
from xmppd.xml.stanza import CLIENT_NS

if TYPE_CHECKING:
    import asyncio

    from xmppd.core.session import Session
    from xmppd.jid import JID
    from xmppd.xml.element import Element
    from xmppd.xml.events import StreamOpen

log = logging.getLogger("xmppd.c2s")


def client_element(stream: Any, el: Element) -> Awaitable | None:
    """An element from a client, whatever carries it (TCP, WebSocket, BOSH): to the
    negotiation until a resource is bound, then to stream management when enabled, else
    the stanza path (other namespaces to the modules' stream extensions)."""
    session = stream.session
    if session is None:
        return stream.negotiation.handle_element(el)
    sm = stream.sm
    if sm is not None:
        return sm.handle(stream, el)
    if el.ns != CLIENT_NS:
        return stream_extension(stream.policy, stream, el)
    return client_stanza(el, session, stream.policy.route, stream)


class C2SStream(XMLStream):
    """One client connection, from the TCP accept to the closing tag."""

    default_ns = CLIENT_NS
    kind = "c2s"
    evictable = True  # an idle unauthenticated client makes room for a new one
    keeps_stream_id = False  # nothing in c2s reads the id once the header is sent

    __slots__ = ("policy", "negotiation", "session", "size_limit_name", "sm")

    def __init__(self, policy: ClientPolicy, *, direct_tls: bool = False) -> None:
        super().__init__(**limits_kwargs(policy.limits, rate_limited=True),
                         connections=policy.connections, secure=direct_tls)
        self.policy = policy
        self.size_limit_name = "max_stanza_size_preauth_bytes"
        self.negotiation: ClientNegotiation | None = ClientNegotiation(
            policy, self, secure=direct_tls
        )
        self.session: Session | None = None  # what the router sees, once bound
        # Stream management (XEP-0198, modules/sm.py) once the client enabled or resumed
        # it: then it takes the stream's stanzas (counting them) and decides what a lost
        # connection means for the session (detach, or end).  None: no per-stanza cost.
        self.sm: Any = None

    @property
    def jid(self) -> JID | None:
        """The full JID once bound."""
        return None if self.session is None else self.session.jid

    # -- connection lifecycle ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._closing:
            return  # refused
        if self.secure:
            self._tls_established()
        self.set_auth_timeout(self.policy.limits.auth_timeout_s, "not authenticated in time")

    def refuse(self) -> None:
        # Tell the client why rather than just hanging up; it is not counted, so the
        # per-address bookkeeping is left alone when it goes.
        self.stream_error("policy-violation", "too many connections from your address")

    def on_closed(self, abrupt: bool) -> None:
        self._unbind(abrupt)
        if log.isEnabledFor(logging.INFO):
            log.info("c2s disconnected: address=%s jid=%s reason=%s",
                     _addr(self.peer), self.jid or "-", self.close_reason)

    def close(self, timeout: float = 2.0) -> None:
        if self._closing or self.closed:
            return
        super().close(timeout)
        # Unbound now, not when the transport is finally gone (a TLS close can wait for
        # the peer): stanzas for it must bounce or go offline meanwhile, not be lost.
        self._unbind(False)

    def _unbind(self, abrupt: bool) -> None:
        session = self.session
        if session is None:
            # Not bound: the negotiation (which points back at this stream) goes with the
            # connection, unless a step of it is still running.
            if self.closed and not self._busy:
                self.negotiation = None
            return
        if self.sm is not None:
            self.sm.stream_closed(self, abrupt)  # a resumable session is detached instead
        else:
            self.policy.unbind(session, abrupt)
        if session.transport is self:
            session.end()  # no reference cycle left between the session and this stream

    def local_domain(self) -> str | None:
        if self.session is not None:
            return self.session.jid.domain
        negotiation = self.negotiation
        return (negotiation and negotiation.domain) or self.policy.default_domain

    # -- events -------------------------------------------------------------------------------

    def handle_stream_open(self, header: StreamOpen) -> None:
        # after binding no header can come: the stream is never restarted again
        self.negotiation.handle_stream_open(header)

    #: client_element itself, not a method that calls it: one Python frame less per stanza
    handle_element = client_element

    @plain_send  # as XMLStream.send: broadcasts write their shared bytes (_fanout)
    def send(self, element: Element) -> None:
        # XMLStream.send, send_bytes and _queue_flush in one frame: every stanza a TCP
        # client receives comes this way (the WebSocket subclass has its own)
        data = element.to_bytes(self.default_ns)
        if self.closed or self._closing:  # nothing may follow </stream:stream>
            return
        out = self._out
        if out is None:
            self._out = [data]
        else:
            out.append(data)
        if not self._flush_queued:
            self._flush_queued = True
            traffic = self.traffic
            waiting = traffic.unflushed
            if waiting is None:
                traffic.unflushed = [self]
                self.loop.call_soon(traffic.flush_all)
            else:
                waiting.append(self)

    # -- what the negotiation asks of the shell (StreamIO) ---------------------------------------

    def begin_tls(self) -> Awaitable | None:
        self.flush()
        self.reset_stream()
        return self._handshake()

    async def _handshake(self) -> None:
        if await self.start_tls(self.policy.tls_context, server_side=True):
            self._tls_established()

    def _tls_established(self) -> None:
        sslobj = self.transport.get_extra_info("ssl_object")
        self.negotiation.tls_started(None if sslobj is None else channel_bindings(sslobj))

    def authenticated(self) -> None:
        self.leave_preauth()  # the auth timeout still runs until the resource is bound
        self.tokenizer.max_stanza_size = self.policy.limits.max_stanza_size_bytes
        self.size_limit_name = "max_stanza_size_bytes"

    def bound(self, session: Session) -> None:
        self.session = session
        self.auth_complete()
        # the negotiation is still running this call; it is released when it returns
        self.negotiation = None
