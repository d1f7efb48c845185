"""XEP-0363 upload throughput and server memory: PUT then GET of one file over HTTPS.

    python benchmarks/upload_throughput.py [--size-mb 10] [--rounds 3]

Starts ``xmppd run`` as a child process on free loopback ports in a temporary data
directory, logs in one account over TCP to ask for slots, then per round PUTs a file of
``--size-mb`` MB (sent in 256 KiB pieces: the client never holds it whole either) and GETs
it back, printing MB/s for each direction.  The server's VmRSS is sampled every 10 ms
during the transfers: "rss growth" is its peak above the value before the first transfer;
with the body streamed to and from disk it stays flat (a few hundred KiB of buffers),
far below the file size.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

PIECE = 256 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Peak VmRSS of ``pid`` while running."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.01)


def xmpp_login(port: int, user: str, password: str) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                           server_hostname="localhost")
    header = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
              "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    sock.sendall(header.encode())
    read_until(sock, b"</stream:features>")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    sock.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}"
                 "</auth>".encode())
    read_until(sock, b"<success")
    sock.sendall(header.encode())
    read_until(sock, b"</stream:features>")
    sock.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    read_until(sock, b"</iq>")
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(data)
        data += chunk
    return data


def slot(sock: ssl.SSLSocket, n: int, size: int) -> tuple[str, str]:
    sock.sendall(f"<iq type='get' id='s{n}' to='upload.localhost'><request "
                 f"xmlns='urn:xmpp:http:upload:0' filename='f{n}.bin' size='{size}' "
                 "content-type='application/octet-stream'/></iq>".encode())
    answer = read_until(sock, b"</iq>").decode()
    put = html.unescape(re.search(r'<put url="([^"]+)"', answer).group(1))
    get = html.unescape(re.search(r'<get url="([^"]+)"', answer).group(1))
    return put, get


def https(url: str) -> tuple[ssl.SSLSocket, str]:
    parts = urlsplit(url)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", parts.port), timeout=30),
                           server_hostname="localhost")
    return sock, parts.path + (f"?{parts.query}" if parts.query else "")


def put(url: str, size: int) -> float:
    sock, target = https(url)
    piece = os.urandom(PIECE)
    start = time.perf_counter()
    sock.sendall(f"PUT {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n".encode())
    left = size
    while left:
        n = min(left, PIECE)
        sock.sendall(piece[:n])
        left -= n
    head = read_until(sock, b"\r\n\r\n")
    elapsed = time.perf_counter() - start
    sock.close()
    assert head.startswith(b"HTTP/1.1 201"), head[:100]
    return elapsed


def get(url: str, size: int) -> float:
    sock, target = https(url)
    start = time.perf_counter()
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                 .encode())
    received = 0
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)  # counted, not kept
    elapsed = time.perf_counter() - start
    sock.close()
    assert received > size, received
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    size = int(args.size_mb * 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        c2s, http_port, https_port = free_port(), free_port(), free_port()
        config = Path(tmp) / "xmppd.toml"
        config.write_text(
            f'[server]\ndata_dir = "{tmp}/data"\nlog_level = "warning"\n'
            f'[c2s]\nlisten = []\ndirect_tls = ["127.0.0.1:{c2s}"]\n'
            f'[http]\nlisten = ["127.0.0.1:{http_port}"]\nlisten_tls = ["127.0.0.1:{https_port}"]\n'
            f'[modules.upload]\nmax_file_size = {size}\nquota_bytes = 0\n')
        xmppd = [sys.executable, "-m", "xmppd.cli", "--config", str(config)]
        subprocess.run([*xmppd, "adduser", "bench@localhost"], input=b"bench\n", check=True)
        server = subprocess.Popen([*xmppd, "run"])
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    xmpp = xmpp_login(c2s, "bench", "bench")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            base = rss_kib(server.pid)
            sampler = Sampler(server.pid)
            sampler.start()
            mb = size / 1e6
            for n in range(args.rounds):
                put_url, get_url = slot(xmpp, n, size)
                up = put(put_url, size)
                down = get(get_url, size)
                print(f"round {n + 1}: PUT {mb / up:7.1f} MB/s   GET {mb / down:7.1f} MB/s   "
                      f"({mb:g} MB)")
            sampler.stop.set()
            sampler.join()
            print(f"server rss before {base / 1024:.1f} MiB, peak {sampler.peak / 1024:.1f} MiB, "
                  f"growth {(sampler.peak - base) / 1024:.1f} MiB for a {mb:g} MB file")
            xmpp.close()
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
