#!/usr/bin/env python3
"""Per-stanza cost of crossing nodes through Redis pub/sub (``[cluster]``).

One process publishes ``--stanzas`` routed chat messages to a channel and subscribes to it
(a throwaway ``redis-server`` on a free loopback port unless ``--redis URL``), wall-clock
from the first publish to the last message received, so it includes Redis itself on the
same cores.  Compared:

- ``thin``: :class:`xmppd.cluster.resp.RedisConnection` (hiredis parser, commands encoded
  by hand, all of an iteration's PUBLISHes in one write), frames of ``--batch`` records as
  a node sends them (``Element.to_bytes`` + STANZA record, decode + one tokenizer feed on
  the receiving side);
- ``redis-py``: redis-py's asyncio client publishing the same frames (one ``await`` each);
- ``*-1``: one PUBLISH per stanza (no batching).

    PYTHONPATH=src python benchmarks/cluster_link.py [--stanzas 100000] [--batch 32]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from worker_link import HEADER, routed_stanzas

from xmppd._impl import implementation
from xmppd.cluster import codec
from xmppd.cluster.resp import RedisConnection
from xmppd.core.config import redis_address
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS
from xmppd.xml.tokenizer import Tokenizer

CHANNEL = b"bench:to:1"


class Receiver:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.got = 0
        self.done = asyncio.get_running_loop().create_future()
        self.tok = Tokenizer(max_stanza_size=codec.MAX_FRAME)
        self.tok.feed(HEADER)

    def push(self, channel: bytes, data: bytes) -> None:
        records: list[tuple] = []
        codec.parse_records(data, 8, len(data), records)
        xml = b"".join(r[2] for r in records)
        self.got += sum(1 for e in self.tok.feed(xml) if isinstance(e, Element))
        if self.got >= self.expected and not self.done.done():
            self.done.set_result(None)


def frames(stanzas: list[Element], batch: int) -> list[bytes]:
    out = []
    for i in range(0, len(stanzas), batch):
        buf = bytearray(b"\0" * 8)
        for el in stanzas[i:i + batch]:
            codec.put_stanza(buf, b"bob@localhost/r1", el.to_bytes(CLIENT_NS))
        out.append(bytes(buf))
    return out


async def thin(url: str, stanzas: list[Element], batch: int) -> float:
    host, port, db = redis_address(url)
    recv = Receiver(len(stanzas))
    sub = await RedisConnection.open(host, port, db, on_push=recv.push)
    await asyncio.gather(*sub.subscribe_wait(CHANNEL))
    pub = await RedisConnection.open(host, port, db)
    start = time.perf_counter()
    # as a node does: serialize in the loop iteration, one PUBLISH per frame; yield to the
    # loop every 16 frames (an iteration's worth of traffic to one destination)
    for i in range(0, len(stanzas), batch * 16):
        for frame in frames(stanzas[i:i + batch * 16], batch):
            pub.send("PUBLISH", CHANNEL, frame)
        await asyncio.sleep(0)
    await recv.done
    elapsed = time.perf_counter() - start
    pub.close()
    sub.close()
    return elapsed


async def redispy(url: str, stanzas: list[Element], batch: int) -> float:
    import redis.asyncio as aioredis

    host, port, db = redis_address(url)
    recv = Receiver(len(stanzas))
    sub = await RedisConnection.open(host, port, db, on_push=recv.push)
    await asyncio.gather(*sub.subscribe_wait(CHANNEL))
    client = aioredis.Redis(host=host, port=port, db=db)
    start = time.perf_counter()
    for i in range(0, len(stanzas), batch * 16):
        for frame in frames(stanzas[i:i + batch * 16], batch):
            await client.publish(CHANNEL, frame)
    await recv.done
    elapsed = time.perf_counter() - start
    await client.aclose()
    sub.close()
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path | None = None,
              timeout: float = 30.0) -> None:
    """Until something listens on loopback ``port``; exits if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}): {log.read_text() if log else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port} after {timeout} s")


def start_redis(directory: str) -> tuple[subprocess.Popen, str]:
    """A throwaway ``redis-server`` on a free loopback port, no persistence: (process, URL)."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server",
                             "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", directory],
                            stdout=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stanzas", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--redis", help="redis://HOST:PORT/DB (default: start one)")
    args = parser.parse_args()
    proc = None
    url = args.redis
    if url is None:
        tmp = tempfile.mkdtemp()
        proc, url = start_redis(tmp)
    stanzas = routed_stanzas(args.stanzas)
    print(f"{args.stanzas} stanzas, implementation {implementation()}")
    try:
        for name, fn, batch in (("thin", thin, args.batch), ("thin-1", thin, 1),
                                ("redis-py", redispy, args.batch),
                                ("redis-py-1", redispy, 1)):
            n = len(stanzas) if batch > 1 else len(stanzas) // 5
            elapsed = asyncio.run(fn(url, stanzas[:n], batch))
            print(f"{name:>10} (frames of {batch:>3}): {elapsed / n * 1e6:6.2f} µs per stanza, "
                  f"{n / elapsed:9.0f} stanzas/s")
    finally:
        if proc is not None:
            proc.terminate()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
