"""XEP-0198 figures in a few seconds, in one process: resumptions per second, and the memory a
detached session holds.

    PYTHONPATH=src python benchmarks/bench_sm.py [--sessions 1000] [--resumes 500]

* **resumptions/s**: ``--resumes`` times, a client with resumable SM loses its TCP connection
  (no closing handshake) and a new connection authenticates (STARTTLS, PLAIN) and resumes;
  timed from the new connection to ``<resumed/>`` (authentication included: a resumption
  costs a login without the bind, the presence and the roster).
* **memory per detached session** (tracemalloc): ``--sessions`` clients enable SM with one
  unacknowledged message each, then all connections die; the memory traced while they are
  detached minus after they expired, divided by the count: the session, its SM state and
  queue, its table entries and module state.  Connections' own buffers are gone by then.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import re
import ssl
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from xmppd.c2s.sasl import derive_all
from xmppd.core.config import Config, Limits, Listener
from xmppd.server import Server

SM = "urn:xmpp:sm:3"
HEADER = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
          "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.buf = reader, writer, b""

    async def until(self, pattern: bytes) -> bytes:
        while True:
            m = re.search(pattern, self.buf, re.S)
            if m:
                got, self.buf = self.buf[: m.end()], self.buf[m.end():]
                return got
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError(self.buf)
            self.buf += chunk

    def send(self, data: str) -> None:
        self.writer.write(data.encode())

    def kill(self) -> None:
        self.writer.transport.abort()


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def authenticate(port: int, user: str, ctx: ssl.SSLContext) -> Conn:
    conn = Conn(*await asyncio.open_connection("127.0.0.1", port))
    conn.send(HEADER + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    await conn.until(b"<proceed[^>]*/>")
    conn.buf = b""
    await conn.writer.start_tls(ctx)
    token = base64.b64encode(f"\0{user}\0bench".encode()).decode()
    conn.send(HEADER + f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
              f"{token}</auth>")
    await conn.until(b"<success[^>]*(/>|>[^<]*</success>)")
    conn.send(HEADER)
    await conn.until(b"</stream:features>")
    return conn


async def enabled_session(port: int, user: str, ctx: ssl.SSLContext) -> tuple[Conn, str]:
    conn = await authenticate(port, user, ctx)
    conn.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
              "<resource>r</resource></bind></iq>")
    await conn.until(b"</iq>")
    conn.send(f"<enable xmlns='{SM}' resume='true'/>")
    enabled = await conn.until(b"<enabled[^>]*/>")
    return conn, re.search(rb"id='([^']+)'", enabled).group(1).decode()


async def wait_detached(sm, n: int) -> None:
    while len(sm.detached()) < n:
        await asyncio.sleep(0.01)


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-sm-"))
    ctx = tls_context()
    users = max(args.sessions, 1)
    config = Config(data_dir=tmp, c2s=(Listener("127.0.0.1", 0),), allow_plain=True, storage="memory://",
                    limits=Limits(max_connections_per_ip=10 * users + 10),
                    modules_options={"sm": {"request_every": 0, "request_after_s": 0}})
    server = Server(config)
    await server.storage.open()
    creds = derive_all("bench")
    for i in range(users):
        await server.storage.create_account(f"u{i}", "localhost", creds)
    await server.start()
    port = server.addresses["c2s"][0][1]
    sm = server.services["sm"]

    # -- resumptions/s --------------------------------------------------------------------
    conn, previd = await enabled_session(port, "u0", ctx)
    elapsed = resume_only = 0.0
    for _ in range(args.resumes):
        conn.kill()
        await wait_detached(sm, 1)
        start = time.perf_counter()
        conn = await authenticate(port, "u0", ctx)
        resume_start = time.perf_counter()
        conn.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
        await conn.until(b"<resumed[^>]*/>")
        end = time.perf_counter()
        elapsed += end - start
        resume_only += end - resume_start
    conn.kill()
    await wait_detached(sm, 1)
    for s in sm.detached():
        sm.end(s)
    print(f"resumptions/s: {args.resumes / elapsed:,.0f} "
          f"({args.resumes} resumptions, {elapsed * 1000 / args.resumes:.2f} ms each with "
          f"TCP+STARTTLS+PLAIN; the <resume/> round trip alone "
          f"{resume_only * 1e6 / args.resumes:.0f} us)")

    # -- memory per detached session ------------------------------------------------------
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    conns = [await enabled_session(port, f"u{i}", ctx) for i in range(args.sessions)]
    for i, (c, _) in enumerate(conns):  # one unacknowledged stanza each
        c.send(f"<message to='u{i}@localhost/r' type='chat'><body>x</body></message>")
    for c, _ in conns:
        await c.until(b"</message>")
    for c, _ in conns:
        c.kill()
        c.writer.close()
    del conns, c
    await wait_detached(sm, args.sessions)
    await asyncio.sleep(0.3)  # connections' buffers and transports go
    gc.collect()
    detached = tracemalloc.get_traced_memory()[0]
    for s in sm.detached():
        sm.end(s)
    while sm.offline_work:
        await asyncio.gather(*list(sm.offline_work))
    await asyncio.sleep(0.3)
    gc.collect()
    ended = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"memory per detached session: {(detached - baseline) / args.sessions:,.0f} bytes "
          f"traced while detached ({args.sessions} sessions, one queued message each); "
          f"{(ended - baseline) / args.sessions:,.0f} bytes per session remain after expiry "
          "(offline copies, expired ids, caches)")
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--resumes", type=int, default=500)
    sys.exit(asyncio.run(main(parser.parse_args())))
