"""The asyncio shell of the links between workers: Unix stream sockets, one each way.

Each worker listens on its own socket and connects to every peer's: it writes only on the
connection it opened (:class:`PeerLink`) and reads only on those it accepted
(:class:`Inbound`).  Records for a peer are appended to one buffer and written as one frame
at the end of the event-loop iteration.  While the connection is down (the peer restarts)
records wait in the buffer; :meth:`PeerLink.take_pending` hands the stanzas among them back
when the peer is declared dead, to be routed again (offline storage) instead of lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmppd.cluster import codec, frames

if TYPE_CHECKING:
    from xmppd.xml.element import Element

log = logging.getLogger(__name__)

#: Reconnection delays (seconds): doubling up to the last.
RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class RecordBuffer(frames.LinkBuffer):
    """Records for one peer (worker or node), appended to one buffer and sent as one frame
    at the end of the event-loop iteration (:meth:`flush`, the carrier's own).  A stanza
    that comes while the buffer holds more than ``max_pending`` bytes (0: no bound) is
    answered by :meth:`overflow` instead."""

    def __init__(self) -> None:
        super().__init__()  # buffer, max_pending, stanzas (counted for the metrics), scheduled
        # for the metrics (read at scrape time): frames and bytes sent
        self.frames = 0
        self.records_bytes = 0

    #: ``stanza(to, element)``: a STANZA record for ``element`` to the session ``to`` (its
    #: full JID, UTF-8), written by the compiled codec when available: every stanza for a
    #: session on a peer comes here (as ``RemoteSession.send``, with no Python frame)
    stanza = frames.link_stanza

    def overflow(self, element: Element) -> None:
        """A stanza came while the buffer held more than :attr:`max_pending` bytes."""
        raise NotImplementedError

    def control(self, name: str, args: dict[str, Any]) -> None:
        codec.put_control(self.buffer, name, args)
        self.schedule()

    def records(self, write: Callable[[bytearray], None]) -> None:
        """Append records written by ``write(buffer)`` (binds, shares...)."""
        write(self.buffer)
        self.schedule()

    def schedule(self, delay: float = 0.0) -> None:
        """Flush at the end of this loop iteration (or in ``delay`` seconds), once."""
        if not self.scheduled:
            self.scheduled = True
            loop = asyncio.get_running_loop()
            if delay:
                loop.call_later(delay, self.flush)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        raise NotImplementedError

    def _take_records(self) -> list[tuple]:
        """Empty the buffer into the records it holds."""
        body, self.buffer = self.buffer, bytearray()
        records: list[tuple] = []
        frames.parse_records(body, 0, len(body), records)
        return records


class PeerLink(RecordBuffer, asyncio.Protocol):
    """The connection to one peer worker, for writing; reconnects until closed."""

    def __init__(self, worker: int, path: Path, hello: Callable[[bytearray], None]) -> None:
        self.worker = worker
        self.path = path
        #: writes what a (re)joined peer must get first: hello, then our snapshot
        self._hello = hello
        super().__init__()
        self._transport: asyncio.Transport | None = None
        self._stopped = False
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._stopped

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._connect_loop())

    async def _connect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stopped and self._transport is None:
            try:
                await loop.create_unix_connection(lambda: self, str(self.path))
                return
            except OSError:
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                await asyncio.sleep(delay)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # (uvloop's is no subclass)
        first = bytearray()
        self._hello(first)
        pending, self.buffer = self.buffer, first
        self.buffer += pending
        self.connected.set()
        self.schedule()

    def data_received(self, data: bytes) -> None:
        pass  # nothing is ever sent back on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.connected.clear()
        if not self._stopped:
            log.info("link to worker %d lost (%s): reconnecting", self.worker, exc or "closed")
            self.start()

    # -- writing -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what is buffered as one frame (kept while the connection is down)."""
        self.scheduled = False
        transport = self._transport
        if transport is None or not self.buffer:
            return
        body, self.buffer = self.buffer, bytearray()
        self.frames += 1
        self.records_bytes += len(body)
        # the frame's length, then the records as they are (uvloop: one writev, no copy)
        transport.writelines((codec.frame_head(body), body))

    def take_pending(self) -> list[tuple]:
        """The records still buffered (the peer died before they could be written)."""
        if self._transport is not None or not self.buffer:
            return []
        return self._take_records()

    def close(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self.flush()
            self._transport.close()


class Inbound(asyncio.Protocol):
    """A connection a peer opened to us: frames in, records handed to ``on_records``;
    ``on_lost`` when it ends (the peer stopped or died)."""

    def __init__(self, on_records: Callable[[Inbound, list[tuple]], None],
                 on_lost: Callable[[Inbound], None]) -> None:
        self.decoder = frames.FrameDecoder()
        self.on_records = on_records
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        #: set by the hello record: (worker, epoch)
        self.worker: int | None = None
        self.epoch: str | None = None
        self.bytes_in = 0  # for the metrics
        self.stanzas_in = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            records = self.decoder.feed(data)
        except codec.CodecError as exc:
            log.error("worker link: %s; closing it", exc)
            if self.transport is not None:
                self.transport.close()
            return
        if records:
            self.on_records(self, records)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(self)
