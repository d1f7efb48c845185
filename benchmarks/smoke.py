"""The benchmark smoke: every in-process micro-benchmark for a moment, figures to JSON.

    python benchmarks/smoke.py [--seconds 1.0] [--json bench-smoke.json]

A regression guard cheap enough for every CI run: it records figures (never asserts a
time: the machine is shared and noisy) so that a build's figures can be set beside an
earlier build's.  In one process, without sockets or a load generator:

* ``tokenizer``: MB/s of the realistic client stream (``corpus.py``), compiled with every
  child built and envelope only, the pure twin, and pyexpat with no-op handlers (the
  ratio to it is what moves least with the machine);
* ``jid``: uncached JID preparations per second, compiled and pure;
* ``wsframe``: WebSocket frame decoding MB/s, compiled and pure;
* ``routing``: CPU ns per routed message, bytes in on one client stream to bytes out on
  another (``hotpath.py``, the default modules);
* ``login``: CPU µs per SCRAM-SHA-256 login (stream header, SASL, restart, bind, close) of
  an in-memory client, its side of SCRAM included (two HMACs and a hash);
* ``muc_fanout`` / ``pubsub_fanout``: delivered stanzas per second to 100 occupants or
  subscribers (``bench_muc.py``, ``pubsub_fanout.py``).

Each figure is the best of repeated runs within ``--seconds``.  The implementation in use
(compiled or pure) is recorded; CI runs it once after the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import bench_muc  # noqa: E402
import hotpath  # noqa: E402
import pubsub_fanout  # noqa: E402
import tokenizer_ir  # noqa: E402
from loadgen.scram import ScramClient  # noqa: E402

from benchmarks.corpus import chunks, stream_bytes  # noqa: E402
from xmppd._impl import PURE_PYTHON, implementation  # noqa: E402
from xmppd.xml.element import Element  # noqa: E402


def best_of(fn: Callable[[], float], seconds: float, least: int = 3) -> float:
    """The smallest of ``fn()``'s answers (a duration) over ``seconds``, at least ``least``."""
    best, deadline, runs = float("inf"), time.perf_counter() + seconds, 0
    while runs < least or time.perf_counter() < deadline:
        best = min(best, fn())
        runs += 1
    return best


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None  # not built: that figure is left out


def _corpus() -> tuple[list[bytes], float]:
    """The tokenizer's input: a client stream in 4 KiB reads, and its size in MB."""
    data, _ = stream_bytes(1000)
    return chunks(data, 4096), len(data) / 1e6


def _run_tokenizer(mod, pieces: list[bytes], full: bool) -> float:
    started = time.perf_counter()
    tok = mod.Tokenizer(max_stanza_size=1 << 20)
    for piece in pieces:
        for event in tok.feed(piece):
            if full and type(event) is Element:
                event.children  # noqa: B018 - builds the subtree (one read)
    return time.perf_counter() - started


def _pure_mb_s(seconds: float) -> float:
    """The pure tokenizer, every child built (MB/s)."""
    pieces, mb = _corpus()
    pure = _module("xmppd.xml._tokenizer_pure")
    return mb / best_of(lambda: _run_tokenizer(pure, pieces, True), seconds)


def tokenizer(seconds: float) -> dict[str, float]:
    pieces, mb = _corpus()
    out: dict[str, float] = {}

    def run_pyexpat() -> float:
        started = time.perf_counter()
        tokenizer_ir.expat(pieces)
        return time.perf_counter() - started

    compiled = None if PURE_PYTHON else _module("xmppd._speedups.tokenizer")
    share = seconds / 4
    if compiled is not None:
        out["compiled_full_mb_s"] = mb / best_of(lambda: _run_tokenizer(compiled, pieces, True), share)
        out["compiled_envelope_mb_s"] = mb / best_of(
            lambda: _run_tokenizer(compiled, pieces, False), share)
        # The compiled tokenizer puts its C ``Element.children`` in place once imported:
        # the pure twin's figure comes from a process that never imported it
        child = subprocess.run([sys.executable, __file__, "--pure-tokenizer", str(share)],
                               env=dict(os.environ, XMPPD_PURE_PYTHON="1"),
                               capture_output=True, text=True, check=True)
        out["pure_mb_s"] = float(child.stdout.split()[-1])
    else:
        out["pure_mb_s"] = _pure_mb_s(share)
    out["pyexpat_noop_mb_s"] = mb / best_of(run_pyexpat, share)
    if compiled is not None:
        out["compiled_full_per_pyexpat"] = out["compiled_full_mb_s"] / out["pyexpat_noop_mb_s"]
    return out


def jid(seconds: float) -> dict[str, float]:
    texts = [f"User{i}@Example{i % 10}.COM/Resource{i}" for i in range(2000)]
    out: dict[str, float] = {}
    for label, name in (("compiled", "xmppd._speedups.jid"), ("pure", "xmppd.jid._pure")):
        mod = _module(name)
        if mod is None:
            continue

        def run(mod=mod) -> float:
            mod.cache_clear()
            started = time.perf_counter()
            for text in texts:
                mod.JID(text)
            return time.perf_counter() - started

        out[f"{label}_per_s"] = len(texts) / best_of(run, seconds / 2)
    return out


def wsframe(seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    payload = b"<message to='bob@localhost/r' type='chat'><body>" + b"x" * 200 + b"</body></message>"
    for label, name in (("compiled", "xmppd._speedups.wsframe"), ("pure", "xmppd.web._wsframe_pure")):
        mod = _module(name)
        if mod is None:
            continue
        frames = mod.encode_frame(1, payload, mask=b"abcd") * 500

        def run(mod=mod, frames=frames) -> float:
            decoder = mod.FrameDecoder(1 << 20, True)
            started = time.perf_counter()
            decoder.feed(frames)
            return time.perf_counter() - started

        out[f"{label}_decode_mb_s"] = len(frames) / 1e6 / best_of(run, seconds / 2)
    return out


async def _logins(count: int) -> float:
    """CPU seconds per in-memory SCRAM-SHA-256 login, of ``count``."""
    from xmppd.c2s.sasl import derive_all
    from xmppd.c2s.stream import C2SStream
    from xmppd.core.config import Config, Limits
    from xmppd.server import Server

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Config(data_dir=Path(tmp), storage="memory:",
                               limits=Limits(rate_limit_bytes_per_s=0)))
        await server.storage.open()
        await server.storage.create_account("alice", "localhost", derive_all("bench"))
        await server.start(listen=False)
        policy = server.client_policy()
        sasl = "urn:ietf:params:xml:ns:xmpp-sasl"

        async def one(port: int) -> None:
            stream, transport = C2SStream(policy, direct_tls=True), hotpath.Transport(port)
            stream.connection_made(transport)
            stream.data_received(hotpath.HEADER)
            client = ScramClient("SCRAM-SHA-256", "alice", "bench")
            stream.data_received(f"<auth xmlns='{sasl}' mechanism='SCRAM-SHA-256'>".encode()
                                 + base64.b64encode(client.first()) + b"</auth>")
            await hotpath.settle(transport, b"</challenge>")
            challenge = transport.last.rsplit(b"</challenge>", 1)[0].rsplit(b">", 1)[1]
            final = client.final(base64.b64decode(challenge))
            stream.data_received(f"<response xmlns='{sasl}'>".encode()
                                 + base64.b64encode(final) + b"</response>")
            await hotpath.settle(transport, b"<success")
            stream.data_received(hotpath.HEADER)
            stream.data_received(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:"
                                 b"xmpp-bind'><resource>r%d</resource></bind></iq>" % port)
            await hotpath.settle(transport, b"</jid>")
            stream.connection_lost(None)

        await one(0)  # the client's PBKDF2, once, untimed
        started = time.process_time()
        for i in range(count):
            await one(i + 1)
        elapsed = time.process_time() - started
        server.modules.unload_all()
        await server.storage.close()
        return elapsed / count


def fanout(seconds: float) -> dict[str, float]:
    muc = best_of(lambda: 1 / asyncio.run(bench_muc.run(100, 50))["once"], seconds / 2, 2)
    pubsub = best_of(
        lambda: 1 / asyncio.run(pubsub_fanout.run(100, 20, "memory:"))["per_s"], seconds / 2, 2)
    return {"muc_100_delivered_per_s": 1 / muc, "pubsub_100_delivered_per_s": 1 / pubsub}


def routing_and_login(seconds: float) -> dict[str, float]:
    with hotpath.runner() as loop_runner:
        per_msg = loop_runner.run(hotpath.measure(20_000, 3))
        per_login = best_of(lambda: loop_runner.run(_logins(200)), seconds / 2, 2)
    return {"routing_ns_per_msg": per_msg * 1e9, "login_us_cpu": per_login * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per benchmark group")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--pure-tokenizer", type=float, metavar="SECONDS",
                        help=argparse.SUPPRESS)  # the child process of tokenizer()
    args = parser.parse_args()
    if args.pure_tokenizer is not None:
        print(_pure_mb_s(args.pure_tokenizer))
        return
    figures: dict[str, object] = {
        "implementation": implementation(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name, fn in (("tokenizer", tokenizer), ("jid", jid), ("wsframe", wsframe),
                     ("fanout", fanout), ("hotpath", routing_and_login)):
        figures[name] = {k: round(v, 3) for k, v in fn(args.seconds).items()}
        for key, value in figures[name].items():
            print(f"{name:10} {key:32} {value:>14,.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
