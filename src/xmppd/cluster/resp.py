"""A thin Redis client: commands encoded here, replies parsed by ``hiredis.Reader``.

Why not redis-py: its asyncio client costs a coroutine, a lock and a parser round per
command (``benchmarks/cluster_link.py`` measures it against this one); a node publishes
one frame per destination per loop iteration and writes registry rows in batches, and
here every command issued in one iteration goes out in one ``write`` (pipelined), its
reply handed to a callback or a future in order.

:class:`RedisConnection` is one connection (command or subscriber mode); it knows
nothing of reconnection, which :mod:`xmppd.cluster.redisnode` handles.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

try:
    import hiredis
except ImportError:  # pragma: no cover - the `cluster` extra
    hiredis = None

#: A reply callback: gets the reply (a ``hiredis.ReplyError`` for an error reply), or a
#: ConnectionError when the connection ended before the reply came.
Callback = Callable[[Any], None]


class RedisError(Exception):
    """An error reply of Redis, or the connection ended before the reply."""


def encode(args: tuple[Any, ...], out: bytearray) -> None:
    """Append the RESP array of ``args`` (bytes, str or int) to ``out``."""
    out += b"*%d\r\n" % len(args)
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out += b"$%d\r\n" % len(arg)
        out += arg
        out += b"\r\n"


class RedisConnection(asyncio.Protocol):
    """One connection.  ``on_push`` (subscriber mode): called with each pub/sub message
    ``(channel, data)``; ``on_lost``: called once when the connection ends."""

    def __init__(self, on_lost: Callable[[Exception | None], None] | None = None,
                 on_push: Callable[[bytes, bytes], None] | None = None) -> None:
        if hiredis is None:
            raise RuntimeError("the cluster needs hiredis: pip install 'xmppd[cluster]'")
        self._reader = hiredis.Reader()
        self._waiting: deque[Callback | asyncio.Future | None] = deque()
        self._out = bytearray()
        # What goes before ``_out`` in the next write: encoded commands and the frames
        # :meth:`publish` carries, each a chunk of its own (not copied into ``_out``)
        self._chunks: list[bytes | bytearray] = []
        self._scheduled = False
        self._transport: asyncio.Transport | None = None
        self._on_lost = on_lost
        self._on_push = on_push
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, db: int = 0, *, timeout: float = 5.0,
                   on_lost: Callable[[Exception | None], None] | None = None,
                   on_push: Callable[[bytes, bytes], None] | None = None) -> RedisConnection:
        """Connect (and ``SELECT db``); OSError or RedisError when that fails."""
        loop = asyncio.get_running_loop()
        conn = cls(on_lost, on_push)
        await asyncio.wait_for(loop.create_connection(lambda: conn, host, port), timeout)
        if db:
            await asyncio.wait_for(conn.call("SELECT", db), timeout)
        return conn

    # -- commands --------------------------------------------------------------------------

    def send(self, *args: Any, callback: Callback | None = None) -> None:
        """Queue a command; written with the others of this loop iteration.  Its reply
        goes to ``callback`` (or nowhere)."""
        if self.closed:
            if callback is not None:
                callback(ConnectionError("not connected to Redis"))
            return
        encode(args, self._out)
        self._waiting.append(callback)
        self._flush_soon()

    def publish(self, channel: str | bytes, head: bytes, body: bytes | bytearray,
                callback: Callback | None = None) -> None:
        """``send("PUBLISH", channel, head + body)`` without copying ``body`` (a frame of
        a few hundred stanzas): it is written as it is, between the encoded pieces, and must
        not change until then."""
        if self.closed:
            if callback is not None:
                callback(ConnectionError("not connected to Redis"))
            return
        if isinstance(channel, str):
            channel = channel.encode()
        out = self._out
        out += b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n" % len(channel)
        out += channel
        out += b"\r\n$%d\r\n" % (len(head) + len(body))
        out += head
        self._chunks += (out, body)
        self._out = bytearray(b"\r\n")
        self._waiting.append(callback)
        self._flush_soon()

    def call(self, *args: Any) -> asyncio.Future:
        """Queue a command; a future of its reply (RedisError for an error reply)."""
        future = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_exception(RedisError("not connected to Redis"))
            return future
        encode(args, self._out)
        self._waiting.append(future)
        self._flush_soon()
        return future

    def subscribe_wait(self, *channels: str | bytes) -> list[asyncio.Future]:
        """SUBSCRIBE to ``channels``: a future per channel, done once it is confirmed.
        Messages (pushes) go to ``on_push`` from then on."""
        futures = []
        for channel in channels:
            encode(("SUBSCRIBE", channel), self._out)
            future = asyncio.get_running_loop().create_future()
            self._waiting.append(future)
            futures.append(future)
        self._flush_soon()
        return futures

    def _flush_soon(self) -> None:
        """Write what is queued at the end of this loop iteration (once)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._transport is None:
            return
        if self._chunks:
            chunks, self._chunks = self._chunks, []
            chunks.append(self._out)
            self._out = bytearray()
            self._transport.writelines(chunks)  # (uvloop: one writev, nothing joined)
        elif self._out:
            data, self._out = self._out, bytearray()
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()
        self._lost(None)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        push = self._on_push
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if (push is not None and isinstance(reply, list) and len(reply) == 3
                    and reply[0] == b"message"):
                push(reply[1], reply[2])
                continue
            if not self._waiting:  # a reply nobody asked for: not Redis speaking
                self.close()
                return
            waiter = self._waiting.popleft()
            if waiter is None:
                continue
            if isinstance(waiter, asyncio.Future):
                if waiter.done():
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    waiter.set_exception(RedisError(str(reply)))
                else:
                    waiter.set_result(reply)
            else:
                waiter(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._transport = None
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_exception(RedisError("the connection to Redis was lost"))
            elif waiter is not None:
                waiter(ConnectionError("the connection to Redis was lost"))
        if self._on_lost is not None:
            self._on_lost(exc)
