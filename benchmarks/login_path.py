"""The login path in one process, without sockets: CPU time per SCRAM-SHA-256 login on a
plaintext stream, from the stream header to the bound resource and the closed connection.

    PYTHONPATH=src python benchmarks/login_path.py [--logins 3000] [--runs 5]
                                                   [--roster --presence]

What ``load.py logins`` measures over TCP, less the kernel and the generator: a
:class:`~xmppd.c2s.stream.C2SStream` over an in-memory transport (marked direct TLS, as
``hotpath.py`` does, so that the authenticated features are those of a TLS stream) logs in
with SCRAM-SHA-256 (the client side's keys computed once, before the clock starts), binds,
optionally fetches its roster and sends initial presence, and is closed.  The server's
default modules run on SQLite storage, as ``xmppd run`` starts.  Printed: the best run's
microseconds per login.  Under ``valgrind --tool=callgrind`` (``--runs 1`` at two sizes)
it gives instructions per login, which this shared machine cannot blur.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hotpath import HEADER, Transport, runner  # noqa: E402
from loadgen.scram import ScramClient  # noqa: E402

from xmppd.c2s.sasl import derive_all  # noqa: E402
from xmppd.c2s.stream import C2SStream  # noqa: E402
from xmppd.core.config import Config, Limits  # noqa: E402
from xmppd.server import Server  # noqa: E402

SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"


async def _written(transport: Transport, marker: bytes, since: int) -> bytes:
    """What was written from ``since`` on, once it holds ``marker`` (a login step may wait
    for storage on another thread)."""
    for _ in range(20000):
        if marker in transport.log[since:]:
            return transport.log[since:]
        await asyncio.sleep(0)
    raise RuntimeError(f"no {marker!r}; written: {transport.log[since:][-300:]!r}")


class LoggingTransport(Transport):
    """Keeps what the server wrote (the client reads its challenges from it)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.log = b""

    def write(self, data: bytes) -> None:
        super().write(data)
        self.log += data


async def login(policy, user: str, port: int, roster: bool, presence: bool) -> None:
    stream, transport = C2SStream(policy, direct_tls=True), LoggingTransport(port)
    stream.connection_made(transport)
    stream.data_received(HEADER)
    scram = ScramClient("SCRAM-SHA-256", user, "bench")
    mark = len(transport.log)
    stream.data_received(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>".encode()
                         + base64.b64encode(scram.first()) + b"</auth>")
    out = await _written(transport, b"</challenge>", mark)
    challenge = base64.b64decode(re.search(rb"<challenge[^>]*>([^<]*)<", out).group(1))
    mark = len(transport.log)
    stream.data_received(f"<response xmlns='{SASL_NS}'>".encode()
                         + base64.b64encode(scram.final(challenge)) + b"</response>")
    await _written(transport, b"<success", mark)
    mark = len(transport.log)
    stream.data_received(HEADER)
    stream.data_received(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                         b"<resource>r</resource></bind></iq>")
    await _written(transport, b"</jid>", mark)
    if roster:
        mark = len(transport.log)
        stream.data_received(b"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        await _written(transport, b"jabber:iq:roster", mark)
    if presence:
        stream.data_received(b"<presence/>")
    stream.data_received(b"</stream:stream>")
    stream.connection_lost(None)


async def measure(logins: int, runs: int, roster: bool, presence: bool) -> float:
    """The best run's CPU seconds per login."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(data_dir=Path(tmp), limits=Limits(rate_limit_bytes_per_s=0))
        server = Server(cfg)
        await server.storage.open()
        users = [f"u{i}" for i in range(logins)]
        credentials = derive_all("bench")
        for user in users:
            await server.storage.create_account(user, "localhost", credentials)
        await server.start(listen=False)
        policy = server.client_policy()
        await login(policy, users[0], 1, roster, presence)  # the client's keys, caches
        best = float("inf")
        for _ in range(runs):
            started = time.process_time()
            for i, user in enumerate(users):
                await login(policy, user, i + 2, roster, presence)
            best = min(best, (time.process_time() - started) / logins)
        server.modules.unload_all()
        await server.storage.close()
        return best


async def main(logins: int, runs: int, roster: bool, presence: bool) -> None:
    best = await measure(logins, runs, roster, presence)
    print(f"{best * 1e6:.1f} µs per login (best of {runs} runs of {logins})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--roster", action="store_true", help="fetch the roster after binding")
    parser.add_argument("--presence", action="store_true", help="send initial presence")
    args = parser.parse_args()
    with runner() as loop_runner:
        loop_runner.run(main(args.logins, args.runs, args.roster, args.presence))
