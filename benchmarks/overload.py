"""Overload measurements: a flooding client against others' latency, and idle-connection shedding.

    python benchmarks/overload.py flood [--seconds 5] [--rate 1048576] [--burst 262144]
    python benchmarks/overload.py shed  [--connections 5000] [--timeout 5] [--rounds 3]

``flood``: a bystander pings the server about 100 times a second (p50/p99 round trip) in three
phases: quiet, with one client flooding messages as fast as TCP lets it under the given rate
limit, and the same flood with ``rate_limit_bytes_per_s = 0``.  Prints the bytes/s delivered
to the flood's recipient and the server's resident memory after each phase.

``shed``: opens N unauthenticated connections (from 127.0.2.x source addresses, 100 per
address so the per-IP limit is not what sheds them), each sending a stream header and then
nothing; prints the server's memory before, with them open, and once the auth timeout has
closed them all, and how long the shedding took.  Several rounds tell a leak (memory grows
round after round) from the allocator keeping freed memory for reuse (it does not).

The server runs in a child process (its own GIL); every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import re
import resource
import selectors
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
          b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


# -- the server, in a child process ---------------------------------------------------------


def _serve(data_dir: str, limits: dict, ports, stop) -> None:
    from xmppd.c2s.sasl import derive_all
    from xmppd.core.config import Config, Limits, Listener
    from xmppd.server import Server

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(20000, hard), hard))

    async def run() -> None:
        cfg = Config(data_dir=Path(data_dir), allow_plain=True, limits=Limits(**limits),
                     c2s=(Listener("127.0.0.1", 0), Listener("127.0.0.1", 0, True)))
        server = Server(cfg)
        await server.storage.open()
        creds = derive_all("secret")
        for user in ("flooder", "sink", "pinger"):
            await server.storage.create_account(user, "localhost", creds)
        await server.start()
        ports.put((server.addresses["c2s"][0][1], server.addresses["c2s-tls"][0][1]))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await server.stop()

    asyncio.run(run())


class ServerProcess:
    """An xmppd with the given ``Limits`` overrides, in a child process."""

    def __init__(self, **limits) -> None:
        self.tmp = TemporaryDirectory()
        ctx = multiprocessing.get_context("spawn")
        self.ports, self.stop_event = ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(target=_serve, args=(self.tmp.name, limits, self.ports,
                                                     self.stop_event), daemon=True)

    def __enter__(self) -> ServerProcess:
        self.proc.start()
        self.port, self.tls_port = self.ports.get(timeout=60)
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
        self.tmp.cleanup()

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            kb = int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1))
        return kb / 1024


# -- a blocking client ------------------------------------------------------------------------


class Client:
    """Direct TLS, PLAIN, bind: just enough to send and receive stanzas."""

    def __init__(self, port: int, user: str, resource_: str) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                    server_hostname="localhost")
        self.buf = b""
        self.sock.sendall(HEADER)
        self.until(rb"</stream:features>")
        token = base64.b64encode(f"\0{user}\0secret".encode())
        self.sock.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                          + token + b"</auth>")
        self.until(rb"<success[^>]*(/>|>.*?</success>)")
        self.sock.sendall(HEADER)
        self.until(rb"</stream:features>")
        self.sock.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                          b"<resource>" + resource_.encode() + b"</resource></bind></iq>")
        self.until(rb"</iq>")

    def until(self, pattern: bytes, timeout: float = 10) -> bytes:
        regex, deadline = re.compile(pattern, re.S), time.monotonic() + timeout
        while True:
            m = regex.search(self.buf)
            if m:
                out, self.buf = self.buf[: m.end()], self.buf[m.end():]
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(pattern)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk


# -- flood ------------------------------------------------------------------------------------


def _ping_phase(pinger: Client, seconds: float) -> list[float]:
    rtts = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        t0 = time.perf_counter()
        pinger.sock.sendall(b"<iq type='get' id='p%d' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
                            b"</iq>" % i)
        pinger.until(rb"id=['\"]p%d['\"][^>]*>" % i)
        rtts.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
    return rtts


def _flood_phase(srv: ServerProcess, seconds: float, label: str, flooding: bool) -> None:
    pinger = Client(srv.tls_port, "pinger", "p")
    sink = Client(srv.tls_port, "sink", "s")
    flooder = Client(srv.tls_port, "flooder", "f") if flooding else None
    stop = threading.Event()
    received = [0]

    def drain() -> None:
        sink.sock.settimeout(0.2)
        while not stop.is_set():
            try:
                chunk = sink.sock.recv(262144)
            except (TimeoutError, ssl.SSLError):
                continue
            if not chunk:
                return
            received[0] += len(chunk)

    def flood() -> None:
        msg = (b"<message to='sink@localhost/s' type='chat'><body>" + b"x" * 400
               + b"</body></message>") * 64
        flooder.sock.settimeout(0.2)
        while not stop.is_set():
            try:
                flooder.sock.sendall(msg)
            except OSError:  # a timeout included: the server is pushing back
                continue

    threads = [threading.Thread(target=drain, daemon=True)]
    if flooder:
        threads.append(threading.Thread(target=flood, daemon=True))
    for t in threads:
        t.start()
    time.sleep(0.5)  # let the flood reach its steady state
    start_bytes, t0 = received[0], time.monotonic()
    rtts = _ping_phase(pinger, seconds)
    rate = (received[0] - start_bytes) / (time.monotonic() - t0)
    stop.set()
    for t in threads:
        t.join(5)
    q = statistics.quantiles(rtts, n=100)
    print(f"  {label:<24} pings {len(rtts):4d}  p50 {q[49]:6.2f} ms  p99 {q[98]:7.2f} ms  "
          f"max {max(rtts):7.2f} ms  to sink {rate / 1024:8.0f} KiB/s  "
          f"server RSS {srv.rss_mib():6.1f} MiB")
    for c in (pinger, sink, flooder):
        if c:
            c.sock.close()


def flood(args: argparse.Namespace) -> None:
    print(f"flood: {args.seconds:g} s per phase; load average {os.getloadavg()[0]:.2f}")
    with ServerProcess(rate_limit_bytes_per_s=args.rate, rate_limit_burst_bytes=args.burst) as srv:
        print(f"  server RSS at start {srv.rss_mib():.1f} MiB")
        _flood_phase(srv, args.seconds, "quiet", flooding=False)
        _flood_phase(srv, args.seconds, f"flood, limit {args.rate // 1024} KiB/s", flooding=True)
    with ServerProcess(rate_limit_bytes_per_s=0) as srv:
        _flood_phase(srv, args.seconds, "flood, no rate limit", flooding=True)


# -- shedding idle connections -----------------------------------------------------------------


def shed(args: argparse.Namespace) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 1000), hard))
    print(f"shed: {args.connections} connections x {args.rounds} rounds; auth timeout "
          f"{args.timeout:g} s; load average {os.getloadavg()[0]:.2f}")
    with ServerProcess(auth_timeout_s=args.timeout) as srv:
        time.sleep(1)
        print(f"  server RSS baseline {srv.rss_mib():.1f} MiB")
        for n in range(args.rounds):
            _shed_round(srv, args, n + 1)


def _shed_round(srv: ServerProcess, args: argparse.Namespace, n: int) -> None:
    base = srv.rss_mib()
    socks = []
    t0 = time.monotonic()
    for i in range(args.connections):
        s = socket.socket()
        s.bind((f"127.0.2.{i // 100 + 1}", 0))
        s.connect(("127.0.0.1", srv.port))
        s.sendall(HEADER)
        socks.append(s)
    opened = time.monotonic() - t0
    time.sleep(0.5)
    peak = srv.rss_mib()
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    left, errors = len(socks), 0
    deadline = time.monotonic() + args.timeout + 60
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            try:
                chunk = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if b"connection-timeout" in chunk:
                errors += 1
            if not chunk:
                sel.unregister(key.fileobj)
                left -= 1
    shed_at = time.monotonic() - t0
    sel.close()
    for s in socks:
        s.close()
    time.sleep(2)
    after = srv.rss_mib()
    print(f"  round {n}: opened in {opened:.1f} s; closed by the server {args.connections - left}"
          f" ({errors} with connection-timeout), all gone {shed_at:.1f} s after the first")
    print(f"    server RSS: before {base:.1f} MiB, with connections {peak:.1f} MiB "
          f"(+{(peak - base) * 1024 / args.connections:.1f} KiB each), after {after:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--seconds", type=float, default=5)
    f.add_argument("--rate", type=int, default=1024 * 1024)
    f.add_argument("--burst", type=int, default=256 * 1024)
    s = sub.add_parser("shed")
    s.add_argument("--connections", type=int, default=5000)
    s.add_argument("--timeout", type=float, default=5)
    s.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    {"flood": flood, "shed": shed}[args.command](args)


if __name__ == "__main__":
    main()
