"""The XML stream shared by client, server and component connections.

An :class:`XMLStream` is an ``asyncio.Protocol``: bytes in go through the tokenizer, and each
event goes to :meth:`handle_event` (overridden by c2s/s2s/component).  A handler may return an
awaitable (a storage lookup, a SASL step): the stream then stops reading and processing until
it completes, so events are always handled in order, while the common path costs no task.

Output is batched: :meth:`send` appends to a buffer flushed once per event-loop iteration.
A peer that does not read is cut off once its transport buffer passes the output limit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import Awaitable
from typing import Any

from xmppd.element import Element, escape_attr, escape_text
from xmppd.tokenizer import StreamClose, StreamOpen, Tokenizer, TokenizerError
from xmppd.xmlevents import STREAM_NS

log = logging.getLogger(__name__)

STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"


class StreamErrorCondition(Exception):
    """Raised by handlers to end the stream with an RFC 6120 §4.9 stream error."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


class XMLStream(asyncio.Protocol):
    """One XML stream over one transport (subclasses supply the protocol logic)."""

    default_ns = "jabber:client"

    def __init__(
        self,
        *,
        max_stanza_size: int,
        max_depth: int,
        max_attrs: int,
        max_output_buffer: int,
    ) -> None:
        self.tokenizer = Tokenizer(max_stanza_size, max_depth, max_attrs)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_event_loop()
        self.peer: tuple[str, int] | None = None
        self.stream_id = secrets.token_hex(8)
        self.max_output_buffer = max_output_buffer
        self.header_sent = False
        self.closed = False
        self._closing = False
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._busy = False
        self._inbox: list[bytes] = []
        self._restart = False
        self._reset = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        if self._busy or self._closing:
            if not self._closing:
                self._inbox.append(data)
            return
        self._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.on_closed(abrupt=not self._closing)

    # -- input ------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        try:
            events = self.tokenizer.feed(data)
        except TokenizerError as exc:
            self._process(exc.events)
            if not self._closing:
                self.stream_error(exc.condition, exc.text)
            return
        self._process(events)

    def _process(self, events: list) -> None:
        i = 0
        while i < len(events):
            if self._closing:
                return
            event = events[i]
            i += 1
            try:
                result = self._dispatch(event)
            except StreamErrorCondition as exc:
                self.stream_error(exc.condition, exc.text)
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
        if self.transport is not None:
            self.transport.pause_reading()
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
        while self._inbox and not self._busy and not self._closing:
            self._feed(self._inbox.pop(0))
        if not self._busy and not self._closing and self.transport is not None:
            self.transport.resume_reading()

    def restart_stream(self) -> None:
        """After SASL success: expect a new header, keeping bytes already received."""
        self._restart = True
        self.header_sent = False

    def reset_stream(self) -> None:
        """On STARTTLS: expect a new header; plaintext received after it is dropped now,
        before the handshake, so nothing decrypted later can be mistaken for it."""
        self.tokenizer.reset()
        self._inbox.clear()
        self._reset = True
        self.header_sent = False

    # -- subclass interface -----------------------------------------------------------------

    def handle_stream_open(self, header: StreamOpen) -> Awaitable | None:
        raise NotImplementedError

    def handle_stream_close(self) -> None:
        self.close()

    def handle_element(self, element: Element) -> Awaitable | None:
        raise NotImplementedError

    def on_closed(self, abrupt: bool) -> None:
        """The transport is gone (``abrupt`` when no closing handshake happened)."""

    # -- output -----------------------------------------------------------------------------

    def send(self, element: Element) -> None:
        self.send_bytes(element.to_bytes(self.default_ns))

    def send_features(self, features: Element) -> None:
        """Write ``<stream:features>`` with the prefix every client expects."""
        inner = b"".join(
            k.to_bytes(None) for k in features.children if isinstance(k, Element)
        )
        self.send_bytes(b"<stream:features>" + inner + b"</stream:features>")

    def send_bytes(self, data: bytes) -> None:
        if self.closed or self._closing:  # nothing may follow </stream:stream>
            return
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        if not self._out or self.transport is None or self.closed:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out = []
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.max_output_buffer:
            log.warning("%s: output buffer over %d bytes, peer not reading; disconnecting",
                        self.peer, self.max_output_buffer)
            self._closing = True
            self.transport.abort()

    def send_header(self, from_: str | None, to: str | None = None, **extra: str) -> None:
        attrs = {"id": self.stream_id, "version": "1.0", "xml:lang": "en"}
        if from_:
            attrs["from"] = from_
        if to:
            attrs["to"] = to
        attrs.update(extra)
        text = "".join(f' {k}="{escape_attr(v)}"' for k, v in attrs.items())
        self.send_bytes(
            f"<?xml version='1.0'?><stream:stream xmlns='{self.default_ns}'"
            f" xmlns:stream='{STREAM_NS}'{text}>".encode()
        )
        self.header_sent = True

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """Send an RFC 6120 §4.9 stream error and close the stream."""
        if self._closing or self.closed:
            return
        log.info("stream error to %s: %s%s", self.peer, condition, f" ({text})" if text else "")
        if not self.header_sent:
            self.send_header(self.local_domain())
        body = f"<{condition} xmlns='{STREAM_ERRORS_NS}'/>"
        if text:
            body += f"<text xmlns='{STREAM_ERRORS_NS}'>{escape_text(text)}</text>"
        self.send_bytes(f"<stream:error>{body}</stream:error>".encode())
        self.close()

    def local_domain(self) -> str | None:
        return None

    def close(self, timeout: float = 2.0) -> None:
        """Send ``</stream:stream>``, flush, and close the transport; abort it if it is
        still open ``timeout`` seconds later."""
        if self._closing or self.closed:
            return
        self.send_bytes(b"</stream:stream>")
        self._closing = True
        self.flush()
        if self.transport is not None and not self.closed:
            self.transport.close()
            # A TLS close waits for the peer's close_notify (30 s by default): a peer that
            # never sends it must not hold the connection (and its per-IP slot) that long.
            self._close_timer = self.loop.call_later(timeout, self._abort)

    def _abort(self) -> None:
        self._close_timer = None
        if not self.closed and self.transport is not None:
            self.transport.abort()


def _log_task_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("stream task failed", exc_info=task.exception())
