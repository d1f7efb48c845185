#!/usr/bin/env python3
"""End-to-end XMPP load generator: logins/s, routed messages/s, latency, memory per session.

Treats the server as a black box on a TCP port. Example:

    python benchmarks/load.py --host 127.0.0.1 --port 5222 --domain localhost \\
        --target prosody --json out.jsonl throughput --pairs 100 --duration 5

See benchmarks/README.md for every workload and the side-by-side script.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loadgen.client import LoginConfig  # noqa: E402
from loadgen.report import aggregate, append_json, attach_ceiling, find_ceiling, print_table  # noqa: E402
from loadgen.runner import find_pid_by_port, rss_kib, run_workers  # noqa: E402
from loadgen.workloads import WorkerSpec  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface: common connection options, one subcommand per workload."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--password", default="bench", help="password of every benchmark account")
    p.add_argument("--user-prefix", default="user", help="accounts are <prefix>0 .. <prefix>N-1")
    p.add_argument("--tls", action="store_true", help="STARTTLS (certificate not verified)")
    p.add_argument("--mechanism", default=None, help="force a SASL mechanism (default: best offered)")
    p.add_argument("--procs", type=int, default=1, help="generator worker processes (sharded)")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0, help="per-step login timeout, s")
    p.add_argument("--target", default="server", help="label stored in the JSON (stub, prosody, xmppd)")
    p.add_argument("--json", default=None, help="append one JSON line per run to this file")
    p.add_argument("--ceiling", default=None, help="JSONL file holding stub runs (generator ceiling)")
    sub = p.add_subparsers(dest="workload", required=True)

    s = sub.add_parser("logins", help="N logins, at most C handshakes in flight")
    s.add_argument("-n", "--sessions", type=int, default=2000)
    s.add_argument("-c", "--concurrency", type=int, default=100)
    s.add_argument("--presence", action="store_true")
    s.add_argument("--no-warm", action="store_true", help="skip the untimed warm-up login per account")

    for name, text in (("throughput", "closed loop, W messages in flight per sender"),
                       ("latency", "fixed offered rate, delivery latency percentiles")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--pairs", type=int, default=100)
        s.add_argument("--duration", type=float, default=5.0, help="measured window, s")
        s.add_argument("--warmup", type=float, default=1.0, help="unmeasured lead-in, s")
        s.add_argument("--body-size", type=int, default=64)
        s.add_argument("--presence", action="store_true")
        s.add_argument("-c", "--concurrency", type=int, default=100, help="logins in flight at setup")
        s.add_argument("--drain-timeout", type=float, default=10.0)
        if name == "throughput":
            s.add_argument("-w", "--window", type=int, default=16, help="messages in flight per sender")
        else:
            s.add_argument("-r", "--rate", type=float, default=5000.0, help="offered msg/s, all senders")

    s = sub.add_parser("memory", help="server RSS before/after N idle sessions with presence")
    s.add_argument("-n", "--sessions", type=int, default=2000)
    s.add_argument("-c", "--concurrency", type=int, default=100)
    s.add_argument("--server-pid", type=int, default=None, help="default: found by listening port")
    s.add_argument("--settle", type=float, default=2.0, help="wait before reading RSS, s")
    s.add_argument("--no-presence", action="store_true")
    return p


def _params(args: argparse.Namespace) -> dict[str, Any]:
    keys = {
        "logins": ("sessions", "concurrency", "presence"),
        "throughput": ("pairs", "window", "duration", "warmup", "body_size"),
        "latency": ("pairs", "rate", "duration", "warmup", "body_size"),
        "memory": ("sessions", "concurrency"),
    }[args.workload]
    params = {k: getattr(args, k) for k in keys}
    params.update(tls=args.tls, procs=args.procs)
    return params


def _specs(args: argparse.Namespace) -> list[WorkerSpec]:
    presence = not args.no_presence if args.workload == "memory" else args.presence
    cfg = LoginConfig(host=args.host, port=args.port, domain=args.domain, password=args.password,
                      tls=args.tls, presence=presence, mechanism=args.mechanism, timeout=args.timeout)
    procs = max(1, args.procs)
    specs = []
    for i in range(procs):
        spec = WorkerSpec(workload=args.workload, login=cfg, user_prefix=args.user_prefix,
                          concurrency=max(1, args.concurrency // procs))
        if args.workload in ("logins", "memory"):
            spec.users = list(range(args.sessions))[i::procs]
            spec.warm_logins = not getattr(args, "no_warm", False)
        else:
            spec.pairs = list(range(args.pairs))[i::procs]
            spec.duration, spec.warmup = args.duration, args.warmup
            spec.body_size, spec.drain_timeout = args.body_size, args.drain_timeout
            if args.workload == "throughput":
                spec.window = args.window
            else:
                spec.rate = args.rate / procs
        specs.append(spec)
    return specs


def main(argv: list[str] | None = None) -> int:
    """Run one workload, print the table, append the JSON line; exit 1 on loss or errors."""
    args = build_parser().parse_args(argv)
    specs = _specs(args)
    memory: dict[str, Any] = {}
    on_ready = None
    if args.workload == "memory":
        pid = args.server_pid or find_pid_by_port(args.port)
        if pid is None:
            print(f"cannot find the process listening on port {args.port}; pass --server-pid", file=sys.stderr)
            return 2
        memory["server_pid"] = pid
        memory["rss_before_kib"] = rss_kib(pid)

        def on_ready(infos: list[dict[str, Any]]) -> None:
            time.sleep(args.settle)  # the server may still be processing presence/close events
            memory["rss_after_kib"] = rss_kib(pid)
            memory["ready_errors"] = sum(i.get("errors", 0) for i in infos)

    infos, results = run_workers(specs, use_uvloop=not args.no_uvloop, on_ready=on_ready)
    figures = aggregate(args.workload, infos, results)
    if args.workload == "memory":
        delta = memory["rss_after_kib"] - memory["rss_before_kib"]
        figures.update(memory)
        figures["bytes_per_session"] = delta * 1024 / figures["sessions"] if figures["sessions"] else 0.0
    # The machine may be shared: keep the load average beside the figures to judge noise.
    figures["loadavg_1m"] = os.getloadavg()[0]
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "target": args.target, "workload": args.workload,
              "host": args.host, "port": args.port, "params": _params(args), "results": figures}
    attach_ceiling(record, find_ceiling(args.ceiling, record))
    print_table(record)
    append_json(args.json, record)
    bad = figures.get("lost", 0) or figures.get("errors", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
