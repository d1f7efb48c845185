"""The thin Redis client's output (sans Redis): commands of one loop iteration go out in one
write, in order, and a published frame is written as it is, not copied into the buffer."""

from __future__ import annotations

import asyncio

import pytest

from xmppd.cluster import resp

pytest.importorskip("hiredis")


class Wire:
    """A transport that keeps what each write call got."""

    def __init__(self) -> None:
        self.calls: list[list[bytes | bytearray]] = []

    def write(self, data: bytes | bytearray) -> None:
        self.calls.append([data])

    def writelines(self, parts) -> None:
        self.calls.append(list(parts))


def encoded(*args) -> bytes:
    out = bytearray()
    resp.encode(args, out)
    return bytes(out)


def test_a_published_frame_goes_out_as_it_is_between_the_other_commands():
    async def run():
        conn = resp.RedisConnection()
        wire = Wire()
        conn.connection_made(wire)  # type: ignore[arg-type]
        replies: list = []
        body = bytearray(b"\x01records" * 1000)
        conn.send("SET", "k", 1, callback=replies.append)
        conn.publish("xmppd:to:7", b"HEAD1234", body, callback=replies.append)
        conn.send("GET", "k", callback=replies.append)
        await asyncio.sleep(0)
        assert len(wire.calls) == 1  # one write for the iteration
        parts = wire.calls[0]
        assert any(part is body for part in parts)  # the frame itself, not a copy
        assert b"".join(parts) == (encoded("SET", "k", 1)
                                   + encoded("PUBLISH", b"xmppd:to:7", b"HEAD1234" + bytes(body))
                                   + encoded("GET", "k"))
        conn.data_received(b"+OK\r\n:1\r\n$1\r\n1\r\n")  # the replies, in order
        assert replies == [b"OK", 1, b"1"]
        conn.send("PING")
        await asyncio.sleep(0)
        assert wire.calls[1] == [bytearray(encoded("PING"))]  # nothing published: one buffer
    asyncio.run(run())


def test_publishing_once_the_connection_is_lost_answers_the_callback():
    async def run():
        conn = resp.RedisConnection()
        conn.connection_made(Wire())  # type: ignore[arg-type]
        conn.connection_lost(None)
        got: list = []
        conn.publish(b"c", b"h", b"body", callback=got.append)
        assert len(got) == 1 and isinstance(got[0], ConnectionError)
    asyncio.run(run())
