"""A client stream over WebSocket (RFC 7395): one more transport kind for c2s.

:class:`WebSocketC2S` is a :class:`~xmppd.c2s.stream.C2SStream` whose bytes are WebSocket
frames: the HTTP listener hands it the connection after the ``101`` answer.  Everything
above the framing is the TCP client's: the same sans-IO negotiation (no STARTTLS: TLS is
the HTTP connection's), the same limits and stanza path, the same :class:`Session`, so
stream management resumes a session across WebSocket and TCP connections alike.

What differs is at the edges: each text message is parsed on its own
(:func:`~xmppd.web.framing.message_element`), ``<open/>`` and ``<close/>`` stand for the
stream header and its closing tag, a stream restart needs no parser restart, and every
element sent is one text frame (batched into one write per loop iteration as on TCP).
A WebSocket close without ``<close/>`` first is a lost connection (stream management
detaches the session); pings are answered with pongs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from xmppd.c2s.stream import C2SStream
from xmppd.transport.connections import address_text
from xmppd.web.framing import (
    FRAMING_NS,
    WRAPPER,
    close_bytes,
    message_element,
    open_bytes,
    standalone,
    stream_open,
)
from xmppd.web.wsframe import (
    BINARY,
    CLOSE,
    INVALID_DATA,
    NORMAL,
    PING,
    PONG,
    TEXT,
    TOO_BIG,
    UNSUPPORTED_DATA,
    FrameDecoder,
    WebSocketError,
    close_payload,
    encode_frame,
    frame_header,
    parse_close,
)
from xmppd.xml.framing import StreamErrorCondition, new_stream_id
from xmppd.xml.stanza import CLIENT_NS
from xmppd.xml.tokenizer import TokenizerError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

    from xmppd.c2s.negotiation import ClientPolicy

log = logging.getLogger("xmppd.websocket")

_FAILED = -1  # an event: the frame codec failed (its WebSocketError follows)
_CLOSE_TAG = b"</stream:stream>"
_XMLNS_CLIENT = f' xmlns="{CLIENT_NS}"'.encode()
_CONDITIONS = {TOO_BIG: "policy-violation", INVALID_DATA: "not-well-formed"}


class WebSocketC2S(C2SStream):
    """One client connection over WebSocket, from the ``101`` to the close frame."""

    kind = "websocket"  # its connections, bytes, logins and stream errors in the metrics
    __slots__ = ("decoder", "ws_close_code", "redirect", "lost", "ws_heard", "ws_pinged",
                 "on_gone")

    def __init__(self, policy: ClientPolicy, *, secure: bool, redirect: str = "",
                 on_gone: Callable[[WebSocketC2S], None] | None = None) -> None:
        super().__init__(policy, direct_tls=secure)
        limits = policy.limits
        self.decoder = FrameDecoder(limits.max_stanza_size_preauth_bytes)
        self.ws_close_code = NORMAL  # the code of our close frame
        self.redirect = redirect  # see-other-uri: every client is sent there
        self.lost = False  # the peer closed the WebSocket without <close/>
        self.ws_heard = True  # something arrived since the last ping sweep
        self.ws_pinged = False
        self.on_gone = on_gone

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tokenizer.feed(WRAPPER)  # every message parses inside a jabber:client stream
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.ws_heard = True
        super().data_received(data)

    def on_closed(self, abrupt: bool) -> None:
        super().on_closed(abrupt or self.lost)
        if self.on_gone is not None:
            self.on_gone(self)

    # -- input --------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        data = self._take_slice(data)
        try:
            frames = self.decoder.feed(data)
        except WebSocketError as exc:
            frames = [*exc.events, (_FAILED, exc)]
        events: list = []
        for op, payload in frames:
            if op == TEXT:
                events.append(payload)
            elif op == PING:
                self._control(PONG, payload)
            elif op != PONG:
                events.append((op, payload))
        self._process(events)
        if self._inbox and not self._busy and not self._closing:
            self._yield()

    def _dispatch(self, event: Any) -> Awaitable | None:
        if type(event) is bytes:
            try:
                el = message_element(self.tokenizer, event)
            except TokenizerError as exc:
                self.limit_fired(exc.condition, exc.text)
                raise StreamErrorCondition(exc.condition, exc.text) from None
            if el.ns == FRAMING_NS:
                if el.name == "open":
                    return self._open(el)
                if el.name == "close":
                    self.handle_stream_close()
                    return None
            if not self.header_sent:  # as over TCP, where the parser wants a header first
                raise StreamErrorCondition("bad-format", "the stream starts with <open/> "
                                           "(RFC 7395 §3.4), also after a restart")
            return self.handle_element(el)
        op, payload = event
        if op == CLOSE:
            self._peer_closed(payload)
            return None
        if op == BINARY:
            self.ws_close_code = UNSUPPORTED_DATA
            raise StreamErrorCondition("bad-format", "only text messages are allowed "
                                       "(RFC 7395 §3.3.1)")
        exc = payload  # _FAILED
        self.ws_close_code = exc.code
        if exc.code == TOO_BIG:
            log.warning("limit %s reached for %s: WebSocket message too big",
                        self.size_limit_name, address_text(self.peer))
        raise StreamErrorCondition(_CONDITIONS.get(exc.code, "bad-format"),
                                   f"WebSocket: {exc.reason}")

    def _open(self, el: Any) -> None:
        if self.redirect:
            self.close_reason = f"sent to {self.redirect} (see-other-uri)"
            self.close()
            return
        if self.negotiation is None:
            raise StreamErrorCondition("policy-violation", "the stream is open already")
        self.handle_stream_open(stream_open(el))

    def _peer_closed(self, payload: bytes) -> None:
        """The client closed the WebSocket: answer its close frame and hang up.  Without
        ``<close/>`` first this is a lost connection, not a closed stream."""
        code, _ = parse_close(payload)
        self.close_reason = f"WebSocket closed by the peer (code {code or '-'})"
        self.lost = True
        self._control(CLOSE, payload[:2])
        self._closing = True
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.close()
            self._close_timer = self.loop.call_later(2.0, self._abort)

    # -- output -------------------------------------------------------------------------------

    def send(self, element: Any) -> None:
        # Each message declares its namespace.  A stanza is serialized for a jabber:client
        # stream (the fast path that reuses the tokenizer's bytes) and the declaration put
        # in after its name: cheaper than serializing it for no default namespace.
        if self.closed or self._closing:
            return
        if element.ns == CLIENT_NS:
            data = element.to_bytes(CLIENT_NS)
            cut = len(element.name) + 1
            data = b"".join((data[:cut], _XMLNS_CLIENT, data[cut:]))
        else:
            data = element.to_bytes(None)
        head = frame_header(TEXT, len(data))
        out = self._out  # _append, inlined: this is every stanza a web client receives
        if out is None:
            self._out = [head, data]
        else:
            out.append(head)
            out.append(data)
        if not self._flush_queued:
            self._queue_flush()

    def send_bytes(self, data: bytes) -> None:
        if self.closed or self._closing:
            return
        if data.startswith(b"<stream:"):
            data = standalone(data)
        elif data == _CLOSE_TAG:  # close(): <close/>, then the close frame
            text = close_bytes(self.redirect or None)
            self._append(frame_header(TEXT, len(text)) + text)
            self._append(encode_frame(CLOSE, close_payload(self.ws_close_code)))
            return
        self._append(frame_header(TEXT, len(data)))
        self._append(data)

    def _append(self, data: bytes) -> None:
        out = self._out
        if out is None:
            self._out = [data]
        else:
            out.append(data)
        if not self._flush_queued:
            self._queue_flush()

    def _control(self, op: int, payload: bytes) -> None:
        if not self.closed and not self._closing:
            self._append(encode_frame(op, payload))

    def ping(self) -> None:
        """A WebSocket ping (keepalive; browsers answer it themselves)."""
        self.ws_pinged = True
        self._control(PING, b"")

    def send_header(self, from_: str | None, to: str | None = None, *, version: bool = True,
                    **extra: str) -> None:
        self.send_bytes(open_bytes(new_stream_id(), from_))  # not kept: see C2SStream
        self.header_sent = True

    # -- what the negotiation asks of the shell -------------------------------------------------

    def restart_stream(self) -> None:
        # Each message parses on its own: a new <open/> is simply the next message.
        self.header_sent = False

    def authenticated(self) -> None:
        super().authenticated()
        self.decoder.max_message_size = self.policy.limits.max_stanza_size_bytes
