"""The XML stream shared by client, server and component connections.

An :class:`XMLStream` is an ``asyncio.Protocol``: bytes in go through the tokenizer, and each
event goes to :meth:`handle_event` (overridden by c2s/s2s/component).  A handler may return an
awaitable (a storage lookup, a SASL step): the stream then stops reading and processing until
it completes, so events are always handled in order, while the common path costs no task.

Output is batched: :meth:`send` appends to a buffer flushed once per event-loop iteration.
A peer that does not read is cut off once its transport buffer passes the output limit, and
while its buffer is above the transport's high-water mark we stop reading from it too (a
peer that does not read our answers gets no more answers to compute).

Input is flow-controlled, never dropped: at most :attr:`XMLStream.read_slice` bytes are
processed per event-loop iteration (the rest waits, with reading paused, so one busy peer
cannot hold the loop), and an optional token bucket (``rate_limit_bytes_per_s``,
``rate_limit_burst_bytes``), charged as input is processed, holds reading and processing once
a peer is over its share until the bucket has refilled: TCP backpressure slows the sender
instead of the server buffering, and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Awaitable
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from xmppd.eager import start_eagerly
from xmppd.transport.connections import Traffic, address_text
from xmppd.xml.element import Element
from xmppd.xml.framing import (
    STREAM_ERRORS_NS,
    StreamErrorCondition,
    features_bytes,
    new_stream_id,
    stream_error_bytes,
    stream_header,
)
from xmppd.xml.stanza import CLIENT_NS
from xmppd.xml.tokenizer import StreamClose, StreamOpen, Tokenizer, TokenizerError

if TYPE_CHECKING:
    from xmppd.core.config import Limits
    from xmppd.transport.connections import Connections

log = logging.getLogger(__name__)

__all__ = ["STREAM_ERRORS_NS", "StreamErrorCondition", "XMLStream", "limits_kwargs", "plain_send",
           "writes_plain"]


def plain_send(method: Any) -> Any:
    """Mark a stream's ``send`` as one that only serializes the element and buffers its
    bytes (``send_bytes``), keeping nothing: a broadcast (``modules/_fanout.py``) may then
    write its bytes, serialized once for every recipient, with ``send_bytes`` instead.
    An override that frames, queues or keeps stanzas (WebSocket, BOSH, stream management's
    wrapper) is unmarked, and gets an element of its own."""
    method.plain_send = True
    return method


def writes_plain(transport: Any) -> bool:
    """Whether ``transport`` sends with a :func:`plain_send` ``send`` in ``jabber:client``:
    a caller may then hand it the bytes that element would serialize to (``send_bytes``)
    instead of the element."""
    send = getattr(type(transport), "send", None)
    return getattr(send, "plain_send", False) \
        and getattr(transport, "default_ns", None) == CLIENT_NS


def limits_kwargs(limits: Limits, *, preauth: bool = True, rate_limited: bool = False) -> dict:
    """The :class:`XMLStream` limits from the configured ``limits``: the small
    pre-authentication stanza size (or the full one), and the read-rate limit for clients."""
    kwargs = {
        "max_stanza_size": (
            limits.max_stanza_size_preauth_bytes if preauth else limits.max_stanza_size_bytes
        ),
        "max_depth": limits.max_depth,
        "max_attrs": limits.max_attrs,
        "max_output_buffer": limits.max_output_buffer_bytes,
    }
    if rate_limited:
        kwargs["rate_limit"] = limits.rate_limit_bytes_per_s
        kwargs["rate_burst"] = limits.rate_limit_burst_bytes
    return kwargs


class XMLStream(asyncio.Protocol):
    """One XML stream over one transport (subclasses supply the protocol logic).

    Shared by every stream kind besides the flow control: connection accounting
    (``connections``), the authentication timeout (:meth:`set_auth_timeout`), the STARTTLS
    handshake (:meth:`start_tls`), and a fresh stream id for each header we send.
    """

    default_ns = "jabber:client"
    #: Bytes handed to the tokenizer per event-loop iteration: a 256 KiB read of small
    #: stanzas would otherwise be parsed and routed in one go, stalling every other peer.
    read_slice = 16 * 1024
    #: The setting behind ``tokenizer.max_stanza_size``, for the log line when it trips.
    size_limit_name = "max_stanza_size_bytes"
    #: The stream kind its counters are kept under (the ``kind`` label of the metrics).
    kind = "xml"
    #: Is :attr:`stream_id` read after the header went out (dialback keys, the component
    #: handshake)?  A client stream never reads it: it keeps "" instead of a 65-byte string
    #: for as long as the client stays connected.
    keeps_stream_id = True

    # Slots: a server holds one stream per idle client, and a dict of this many attributes
    # (past the shared-key limit) would cost more than a kilobyte each.  Subclasses that
    # do not declare __slots__ get a __dict__ as usual.
    __slots__ = (
        "tokenizer", "transport", "loop", "peer", "stream_id", "max_output_buffer",
        "header_sent", "closed", "_closing", "_out", "_flush_queued", "_busy", "_inbox",
        "_restart", "_reset", "_restarts", "_pending_error", "_close_timer", "_write_paused",
        "rate_limit", "rate_burst", "_tokens", "_tokens_at", "_rate_timer", "_rate_logged",
        "secure", "connections", "close_reason", "_auth_timer", "_preauth", "heard",
        "traffic",
    )
    #: May :class:`~xmppd.transport.connections.Connections` close this stream, while it is
    #: not authenticated, to make room for a newer connection from its address?
    evictable = False

    def __init__(
        self,
        *,
        max_stanza_size: int,
        max_depth: int,
        max_attrs: int,
        max_output_buffer: int,
        rate_limit: int = 0,
        rate_burst: int = 0,
        connections: Connections | None = None,
        secure: bool = False,
        traffic: Traffic | None = None,
    ) -> None:
        self.tokenizer = Tokenizer(max_stanza_size, max_depth, max_attrs)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_event_loop()
        self.peer: tuple[str, int] | None = None
        self.stream_id = ""  # a new one for each header we send
        self.secure = secure  # TLS is on (direct TLS, or after STARTTLS)
        self.connections = connections
        # The counters of this kind of stream (bytes, stream errors, limits): plain ints
        # shared by the server's streams of one kind, read by xmppd.metrics.
        if traffic is None:
            traffic = connections.traffic_for(self.kind) if connections else Traffic(self.kind)
        self.traffic = traffic
        self.close_reason: str | None = None  # for the disconnect log line
        self._auth_timer: asyncio.TimerHandle | None = None
        self._preauth = False  # counted toward the per-address pre-auth cap
        self.max_output_buffer = max_output_buffer
        self.header_sent = False
        # Set by every read; a keepalive (modules/keepalive.py) clears it and pings a peer
        # that stayed silent for a whole interval: a flag, not a clock read per read.
        self.heard = True
        self.closed = False
        self._closing = False
        self._out: list[bytes] | None = None  # created by the first send after a flush
        self._flush_queued = False  # in traffic.unflushed: flushed at the iteration's end
        self._busy = False
        self._inbox: list[bytes] | None = None  # input waiting its turn, when there is any
        self._restart = False
        self._reset = False
        self._restarts = 0  # restarts and resets so far: tells an old stream's error
        self._pending_error: tuple[TokenizerError, int] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        # Token bucket over received bytes: ``rate_limit`` bytes/s, ``rate_burst`` capacity.
        self.rate_limit = rate_limit
        self.rate_burst = max(rate_burst, 1)
        self._tokens = float(self.rate_burst) if rate_limit else 0.0
        self._tokens_at = 0.0
        self._rate_timer: asyncio.TimerHandle | None = None
        self._rate_logged = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self.traffic.opened += 1
        if self.rate_limit:
            self._tokens_at = self.loop.time()
        if self.connections is not None:
            if self.connections.opened(self):
                self._preauth = True
            else:
                self.refuse()

    def refuse(self) -> None:
        """Over the per-address cap: hang up (not counted, so nothing to free later)."""
        self._closing = True
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.heard = True
        self.traffic.bytes_in += len(data)
        if self._closing:
            return
        if self._preauth:  # the longest idle unauthenticated connection goes first
            self.connections.active(self)
        # self._held() inlined: this runs for every read
        if self._busy or self._inbox or self._rate_timer is not None or self._write_paused:
            if self._inbox is None:
                self._inbox = [data]
            else:
                self._inbox.append(data)
            return
        self._feed(data)

    def pause_writing(self) -> None:
        # The transport buffer passed its high-water mark: the peer is not keeping up with
        # what we send, so stop reading (and answering) its requests until it drains.
        self._write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._kick()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.traffic.closed += 1
        self._flush_queued = False  # still in the flush list: its flush finds it closed
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        self.auth_complete()
        if self.close_reason is None:
            self.close_reason = "closed by the peer" if exc is None else f"connection lost ({exc})"
        try:
            self.on_closed(abrupt=not self._closing)
        finally:
            if self.connections is not None:
                self.connections.closed(self)

    # -- authentication timeout and TLS ------------------------------------------------------

    def set_auth_timeout(self, seconds: float, text: str) -> None:
        """End the stream with ``connection-timeout`` unless :meth:`auth_complete` is called
        within ``seconds`` (0: no timeout)."""
        if seconds:
            self._auth_timer = self.loop.call_later(seconds, self._auth_timeout, seconds, text)

    def auth_complete(self) -> None:
        """Authenticated: no timeout, and no longer counted toward the pre-auth cap."""
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.leave_preauth()

    def leave_preauth(self) -> None:
        """The peer authenticated: it no longer counts toward (nor can be closed for) the
        per-address cap on unauthenticated connections."""
        if self._preauth:
            self._preauth = False
            self.connections.authenticated(self)

    def evict(self) -> None:
        """Closed to make room for a newer connection from the same address (called by
        :class:`~xmppd.transport.connections.Connections`, which logs the limit)."""
        self._preauth = False
        self.stream_error("connection-timeout", "idle before authentication; closed to make "
                          "room for a newer connection from your address")

    def _auth_timeout(self, seconds: float, text: str) -> None:
        self._auth_timer = None
        self.traffic.limit("auth_timeout_s")
        log.info("limit auth_timeout_s (%g) reached for %s: closing", seconds,
                 address_text(self.peer))
        self.stream_error("connection-timeout", text)

    async def start_tls(
        self, ctx: ssl.SSLContext, *, server_side: bool = True, server_hostname: str | None = None
    ) -> bool:
        """The TLS handshake after ``<proceed/>`` (the stream was reset already); False if
        it failed (the connection is then aborted) or the connection went away."""
        try:
            transport = await self.loop.start_tls(
                self.transport, self, ctx, server_side=server_side,
                server_hostname=server_hostname, ssl_handshake_timeout=15,
            )
        except (TimeoutError, OSError, ConnectionError) as exc:  # ssl.SSLError is an OSError
            log.info("TLS handshake with %s failed: %s", self.peer, exc)
            self.close_reason = f"TLS handshake failed ({exc})"
            self._closing = True
            if self.transport is not None:
                self.transport.abort()
            return False
        if transport is None:  # the connection went away during the handshake
            self._closing = True
            return False
        self.transport = transport
        self.secure = True
        return True

    # -- flow control -----------------------------------------------------------------------

    def _set_reading(self) -> None:
        """Pause or resume the transport: paused while an event is being handled, while
        the rate limit is in force, or while the peer is not reading our output."""
        transport = self.transport
        if transport is None or self.closed or self._closing:
            return
        if self._busy or self._held():
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _held(self) -> bool:
        """Input must wait: the rate limit is in force, or the peer is not reading.
        (Inlined in data_received: change both.)"""
        return self._rate_timer is not None or self._write_paused

    def _kick(self) -> None:
        """A hold ended: process what is queued (next iteration), or read again."""
        if self._inbox and not self._busy and not self._closing:
            self._yield()
        else:
            self._set_reading()

    def _charge(self, n: int) -> None:
        """Take ``n`` bytes about to be processed from the bucket; in debt, hold the input
        (pause reading and processing) until the debt is repaid."""
        now = self.loop.time()
        tokens = self._tokens + (now - self._tokens_at) * self.rate_limit
        self._tokens = min(tokens, self.rate_burst) - n
        self._tokens_at = now
        if self._tokens < 0 and self._rate_timer is None:
            self.traffic.limit("rate_limit_bytes_per_s")
            if not self._rate_logged:  # once per connection: a flooder would fill the log
                self._rate_logged = True
                log.info("limit rate_limit_bytes_per_s (%d, burst %d) reached for %s: "
                         "reading paused", self.rate_limit, self.rate_burst,
                         address_text(self.peer))
            self._rate_timer = self.loop.call_later(-self._tokens / self.rate_limit,
                                                    self._rate_resume)
            self._set_reading()

    def _rate_resume(self) -> None:
        self._rate_timer = None
        self._charge(0)
        if self._rate_timer is None:
            self._kick()

    # -- input ------------------------------------------------------------------------------

    def _take_slice(self, data: bytes) -> bytes:
        """The part of ``data`` processed now (at most ``read_slice`` bytes; the rest waits
        in the inbox), charged to the rate limit."""
        step = self.read_slice
        if len(data) > step:
            self._inbox = [data[i : i + step] for i in range(step, len(data), step)] + (
                self._inbox or []
            )
            data = data[:step]
        if self.rate_limit:
            self._charge(len(data))
        return data

    def _feed(self, data: bytes) -> None:
        if self.rate_limit or len(data) > self.read_slice:
            data = self._take_slice(data)
        try:
            events = self.tokenizer.feed(data)
        except TokenizerError as exc:
            generation = self._restarts
            self._process(exc.events)
            if self._busy and not self._closing:
                # An async step (SASL) may still restart the stream, and then the error
                # was the old stream's: a pipelined new header with its <?xml?>.
                self._pending_error = (exc, generation)
                return
            self._tokenizer_failed(exc, generation)
            return
        self._process(events)
        if self._inbox and not self._busy and not self._closing:
            self._yield()

    def _tokenizer_failed(self, exc: TokenizerError, generation: int) -> None:
        if self._restarts != generation or self._closing:
            return  # the stream restarted: the error belonged to the old one
        self.limit_fired(exc.condition, exc.text)
        self.stream_error(exc.condition, exc.text)

    def _yield(self) -> None:
        """Let other connections run before processing the rest of our input."""
        self._busy = True
        self._set_reading()
        self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._busy = False
        if self._closing or self.closed:
            return
        inbox = self._inbox
        if inbox and not self._held():  # else the end of the hold drains it
            data = inbox.pop(0)
            if not inbox:
                self._inbox = None
            self._feed(data)
        self._set_reading()

    def limit_fired(self, condition: str, text: str | None) -> None:
        """Log a tokenizer limit with the name of the setting that set it."""
        if condition != "policy-violation":
            return
        name = {
            "too many attributes": "max_attrs",
            "elements nested too deeply": "max_depth",
        }.get(text or "", self.size_limit_name)
        self.traffic.limit(name)
        log.warning("limit %s reached for %s: %s", name, address_text(self.peer), text)

    def _process(self, events: list) -> None:
        i = 0
        while i < len(events):
            if self._closing:
                return
            event = events[i]
            i += 1
            try:
                # an element (not a header, not a WebSocket subclass's frame) goes to
                # handle_element without the _dispatch frame: the stanza path
                result = self.handle_element(event) if type(event) is Element \
                    else self._dispatch(event)
                if type(result) is CoroutineType:
                    result = start_eagerly(result)
            except StreamErrorCondition as exc:
                self.stream_error(exc.condition, exc.text)
                return
            except Exception:
                log.exception("error while handling a stanza from %s", self.peer)
                self.stream_error("internal-server-error")
                return
            if self._reset:
                # STARTTLS: what followed <starttls/> in this batch was plaintext; drop it.
                self._reset = False
                events, i = [], 0
            if result is not None and inspect.isawaitable(result):
                self._wait(result, events[i:])
                return
            if self._restart:
                events, i = self._apply_restart(), 0

    def _apply_restart(self) -> list:
        """A restart discards the rest of the batch: it was parsed under the old stream."""
        self._restart = False
        self._restarts += 1
        try:
            return self.tokenizer.restart()
        except TokenizerError as exc:
            self._process(exc.events)
            self.stream_error(exc.condition, exc.text)
            return []

    def _dispatch(self, event: Any) -> Awaitable | None:
        if type(event) is StreamOpen:
            return self.handle_stream_open(event)
        if type(event) is StreamClose:
            self.handle_stream_close()
            return None
        return self.handle_element(event)

    def _wait(self, awaitable: Awaitable, rest: list) -> None:
        self._busy = True
        self._set_reading()
        task = asyncio.ensure_future(self._finish(awaitable, rest))
        task.add_done_callback(_log_task_error)

    async def _finish(self, awaitable: Awaitable, rest: list) -> None:
        try:
            await awaitable
        except StreamErrorCondition as exc:
            self._busy = False
            self.stream_error(exc.condition, exc.text)
            return
        except Exception:
            self._busy = False
            log.exception("error while handling a stanza from %s", self.peer)
            self.stream_error("internal-server-error")
            return
        self._busy = False
        if self._restart:
            rest = self._apply_restart()
        self._process(rest)
        pending, self._pending_error = self._pending_error, None
        if pending is not None and not self._busy:
            self._tokenizer_failed(*pending)
        elif pending is not None:
            self._pending_error = pending
        if self._inbox and not self._busy and not self._closing:
            self._yield()
        self._set_reading()

    def restart_stream(self) -> None:
        """After SASL success: expect a new header, keeping bytes already received."""
        self._restart = True
        self.header_sent = False

    def reset_stream(self) -> None:
        """On STARTTLS: expect a new header; plaintext received after it is dropped now,
        before the handshake, so nothing decrypted later can be mistaken for it."""
        self.tokenizer.reset()
        self._inbox = None
        self._restarts += 1
        self._reset = True
        self.header_sent = False

    # -- subclass interface -----------------------------------------------------------------

    def handle_stream_open(self, header: StreamOpen) -> Awaitable | None:
        raise NotImplementedError

    def handle_stream_close(self) -> None:
        if self.close_reason is None:
            self.close_reason = "stream closed by the peer"
        self.close()

    def handle_element(self, element: Element) -> Awaitable | None:
        raise NotImplementedError

    def on_closed(self, abrupt: bool) -> None:
        """The transport is gone (``abrupt`` when no closing handshake happened)."""

    # -- output -----------------------------------------------------------------------------

    @plain_send
    def send(self, element: Element) -> None:
        self.send_bytes(element.to_bytes(self.default_ns))

    def send_features(self, features: Element) -> None:
        """Write ``<stream:features>`` with the prefix every client expects."""
        self.send_bytes(features_bytes(features))

    def send_bytes(self, data: bytes) -> None:
        if self.closed or self._closing:  # nothing may follow </stream:stream>
            return
        out = self._out
        if out is None:
            self._out = [data]
        else:
            out.append(data)
        if not self._flush_queued:
            self._queue_flush()

    def _queue_flush(self) -> None:
        """Flush at the end of this loop iteration: one callback flushes every stream of
        this kind that has output (Traffic.flush_all), not a callback (a Handle) each.
        (Inlined in C2SStream.send: change both.)"""
        self._flush_queued = True
        traffic = self.traffic
        waiting = traffic.unflushed
        if waiting is None:
            traffic.unflushed = [self]
            self.loop.call_soon(traffic.flush_all)
        else:
            waiting.append(self)

    def flush(self) -> None:
        self._flush_queued = False
        out = self._out
        transport = self.transport
        if not out or transport is None or self.closed:
            return
        data = b"".join(out) if len(out) > 1 else out[0]
        self._out = None
        transport.write(data)
        self.traffic.bytes_out += len(data)
        if transport.get_write_buffer_size() > self.max_output_buffer:
            self.traffic.limit("max_output_buffer_bytes")
            log.warning("limit max_output_buffer_bytes (%d) reached for %s: peer not reading;"
                        " disconnecting", self.max_output_buffer, address_text(self.peer))
            self._closing = True
            self.transport.abort()

    def send_header(
        self, from_: str | None, to: str | None = None, *, version: bool = True, **extra: str
    ) -> None:
        """Open our side of the stream, with a new stream id each time (RFC 6120 §4.7.3)."""
        stream_id = new_stream_id()
        if self.keeps_stream_id:
            self.stream_id = stream_id
        self.send_bytes(stream_header(self.default_ns, stream_id, from_, to,
                                      version=version, **extra))
        self.header_sent = True

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """Send an RFC 6120 §4.9 stream error and close the stream."""
        if self._closing or self.closed:
            return
        log.info("stream error to %s: %s%s", address_text(self.peer), condition, f" ({text})" if text else "")
        errors = self.traffic.stream_errors
        errors[condition] = errors.get(condition, 0) + 1
        if not self.header_sent:
            self.send_header(self.local_domain())
        self.send_bytes(stream_error_bytes(condition, text))
        self.close_reason = f"stream error {condition}"
        self.close()

    def local_domain(self) -> str | None:
        return None

    def close(self, timeout: float = 2.0) -> None:
        """Send ``</stream:stream>``, flush, and close the transport; abort it if it is
        still open ``timeout`` seconds later."""
        if self._closing or self.closed:
            return
        if self.close_reason is None:
            self.close_reason = "closed by the server"
        self.send_bytes(b"</stream:stream>")
        self._closing = True
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.close()
            # A TLS close waits for the peer's close_notify (30 s by default): a peer that
            # never sends it must not hold the connection (and its per-IP slot) that long.
            self._close_timer = self.loop.call_later(timeout, self._abort)

    def drop(self, reason: str) -> None:
        """Cut the connection as if the peer had gone (a dead peer: no closing handshake,
        so stream management detaches the session rather than ending it)."""
        if self.closed or self.transport is None:
            return
        self.close_reason = reason
        self.transport.abort()

    def _abort(self) -> None:
        self._close_timer = None
        if not self.closed and self.transport is not None:
            self.transport.abort()


def _log_task_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("stream task failed", exc_info=task.exception())
