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
    p.add_argument("--websocket", default="", metavar="PATH",
                   help="XMPP over WebSocket (RFC 7395) at PATH (e.g. /xmpp-websocket) of the "
                        "plain HTTP port given by --port, instead of TCP c2s")
    p.add_argument("--bosh", default="", metavar="PATH",
                   help="XMPP over BOSH (XEP-0206) at PATH (e.g. /http-bind) of the plain HTTP "
                        "port given by --port, instead of TCP c2s (long polling, hold 1)")
    p.add_argument("--mechanism", default=None, help="force a SASL mechanism (default: best offered)")
    p.add_argument("--procs", type=int, default=1, help="generator worker processes (sharded)")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0, help="per-step login timeout, s")
    p.add_argument("--target", default="server", help="label stored in the JSON (stub, prosody, xmppd)")
    p.add_argument("--json", default=None, help="append one JSON line per run to this file")
    p.add_argument("--ceiling", default=None, help="JSONL file holding stub runs (generator ceiling)")
    p.add_argument("--features", default="plain",
                   help="label of the server's feature set stored with the run (e.g. sm+carbons+mam)")
    p.add_argument("--carbons", action="store_true", help="every session enables XEP-0280 carbons after bind")
    sub = p.add_subparsers(dest="workload", required=True)

    s = sub.add_parser("logins", help="N logins, at most C handshakes in flight")
    s.add_argument("-n", "--sessions", type=int, default=2000)
    s.add_argument("-c", "--concurrency", type=int, default=100)
    s.add_argument("--presence", action="store_true")
    s.add_argument("--roster", action="store_true",
                   help="a client's whole login: roster get (then --presence) after bind, result awaited")
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
            s.add_argument("--sm", action="store_true", help="XEP-0198: enable after bind, answer <r/>")
            s.add_argument("--sm-every", type=int, default=16,
                           help="with --sm: send <r/> every N messages sent (0: never)")
        else:
            s.add_argument("-r", "--rate", type=float, default=5000.0, help="offered msg/s, all senders")

    s = sub.add_parser("memory", help="server RSS before/after N idle sessions with presence")
    s.add_argument("-n", "--sessions", type=int, default=2000)
    s.add_argument("-c", "--concurrency", type=int, default=100)
    s.add_argument("--server-pid", type=int, default=None, help="default: found by listening port")
    s.add_argument("--settle", type=float, default=2.0, help="wait before reading RSS, s")
    s.add_argument("--no-presence", action="store_true")
    s.add_argument("--sm", action="store_true",
                   help="every session enables resumable XEP-0198 stream management")
    s.add_argument("--csi", action="store_true",
                   help="every session goes XEP-0352 inactive once online")

    # -- feature workloads (benchmarks/loadgen/features.py), one generator process each --------
    def timed(s: argparse.ArgumentParser, duration: float = 5.0) -> None:
        s.add_argument("--duration", type=float, default=duration, help="measured window, s")
        s.add_argument("--warmup", type=float, default=1.0, help="unmeasured lead-in, s")
        s.add_argument("-c", "--concurrency", type=int, default=100, help="logins in flight at setup")
        s.add_argument("--drain-timeout", type=float, default=10.0)

    s = sub.add_parser("mam-page", help="MAM: p50/p99 of one page of an archive, closed loop")
    timed(s)
    s.add_argument("--clients", type=int, default=4, help="sessions of the owner querying at once")
    s.add_argument("--page", type=int, default=50, help="RSM max per query")
    s.add_argument("--owner", type=int, default=0, help="index of the archive's account")
    s.add_argument("--last-page", action="store_true", help="always the newest page (default: page back)")
    s.add_argument("--fill", type=int, default=0,
                   help="first send this many messages to the owner over XMPP (Prosody; xmppd: fill_archive.py)")
    s.add_argument("--fill-from", type=int, default=1, help="index of the account sending the fill")

    s = sub.add_parser("resume", help="XEP-0198: drop TCP and resume, resumptions/s; detached RSS")
    s.add_argument("-n", "--sessions", type=int, default=200)
    s.add_argument("--cycles", type=int, default=5, help="drop+resume cycles per session")
    s.add_argument("-c", "--concurrency", type=int, default=100)
    s.add_argument("--server-pid", type=int, default=None, help="default: found by listening port")
    s.add_argument("--settle", type=float, default=1.0, help="wait before reading RSS, s")

    s = sub.add_parser("fanout", help="PubSub: one publisher, N subscribers on one node")
    timed(s)
    s.add_argument("--subscribers", type=int, default=1000)
    s.add_argument("-w", "--window", type=int, default=1, help="publishes in flight")
    s.add_argument("--payload", type=int, default=100, help="bytes of item payload")
    s.add_argument("--service", default="", help="default pubsub.<domain>")

    s = sub.add_parser("pep-presence", help="M users with caps + PEP nodes: RSS/user, server CPU/presence")
    s.add_argument("-n", "--sessions", type=int, default=1000)
    s.add_argument("--nodes", type=int, default=3, help="PEP nodes published per user (at most 6)")
    s.add_argument("--updates", type=int, default=5, help="presence updates per user in the timed phase")
    s.add_argument("-c", "--concurrency", type=int, default=100)
    s.add_argument("--server-pid", type=int, default=None, help="default: found by listening port")
    s.add_argument("--settle", type=float, default=1.0)
    s.add_argument("--drain-timeout", type=float, default=60.0)
    s.add_argument("--publish-concurrency", type=int, default=0,
                   help="PEP publishes in flight during set-up (default: -c)")

    s = sub.add_parser("muc", help="MUC: rooms of S occupants, T talkers: delivered msgs/s, p99")
    timed(s)
    s.add_argument("--occupants", type=int, default=100, help="occupants per room")
    s.add_argument("--talkers", type=int, default=3, help="talkers per room")
    s.add_argument("--rooms", type=int, default=1)
    s.add_argument("-w", "--window", type=int, default=4, help="messages in flight per talker")
    s.add_argument("--body-size", type=int, default=64)
    s.add_argument("--service", default="", help="default conference.<domain>")

    s = sub.add_parser("muc-join", help="MUC: J occupants join one fresh room at once: joins/s")
    s.add_argument("--occupants", type=int, default=200)
    s.add_argument("--join-concurrency", type=int, default=0, help="joins in flight (0: all at once)")
    s.add_argument("-c", "--concurrency", type=int, default=100, help="logins in flight at setup")
    s.add_argument("--service", default="", help="default conference.<domain>")

    s = sub.add_parser("upload", help="XEP-0363: MB/s of PUT and GET of one file, server RSS growth")
    s.add_argument("--size-mb", type=float, default=10.0, help="file size, MB (10^6 bytes)")
    s.add_argument("--rounds", type=int, default=3, help="slot + PUT + GET rounds")
    s.add_argument("--service", default="", help="default upload.<domain>")
    s.add_argument("--server-pid", type=int, default=None, help="default: found by listening port")
    return p


#: Workloads of loadgen/features.py: run in one generator process (rooms/nodes are shared),
#: except resume, whose sessions are independent (sharded like logins).
FEATURE = ("mam-page", "resume", "fanout", "pep-presence", "muc", "muc-join", "upload")
SINGLE = ("mam-page", "fanout", "pep-presence", "muc", "muc-join", "upload")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    keys = {
        "logins": ("sessions", "concurrency", "presence", "roster"),
        "throughput": ("pairs", "window", "duration", "warmup", "body_size"),
        "latency": ("pairs", "rate", "duration", "warmup", "body_size"),
        "memory": ("sessions", "concurrency", "sm", "csi"),
        "mam-page": ("clients", "page", "last_page", "duration"),
        "resume": ("sessions", "cycles", "concurrency"),
        "fanout": ("subscribers", "window", "payload", "duration"),
        "pep-presence": ("sessions", "nodes", "updates"),
        "muc": ("rooms", "occupants", "talkers", "window", "duration"),
        "muc-join": ("occupants", "join_concurrency"),
        "upload": ("size_mb", "rounds"),
    }[args.workload]
    params = {k: getattr(args, k) for k in keys}
    params.update(tls=args.tls, websocket=args.websocket, bosh=args.bosh, procs=1 if args.workload in SINGLE else args.procs, features=args.features,
                  carbons=args.carbons)
    if args.workload == "throughput":
        params.update(sm=args.sm, sm_every=args.sm_every if args.sm else 0)
    return params


def _feature_spec(args: argparse.Namespace, cfg: LoginConfig) -> WorkerSpec:
    w = args.workload
    spec = WorkerSpec(workload=w, login=cfg, user_prefix=args.user_prefix,
                      concurrency=max(1, getattr(args, "concurrency", 1)))
    for k in ("duration", "warmup", "drain_timeout", "body_size", "window"):
        if hasattr(args, k):
            setattr(spec, k, getattr(args, k))
    x = spec.extra
    if w == "mam-page":
        x.update(owner=args.owner, clients=args.clients, page=args.page, walk=not args.last_page,
                 fill=args.fill, fill_from=args.fill_from)
    elif w == "resume":
        spec.users = list(range(args.sessions))
        x.update(cycles=args.cycles)
    elif w == "fanout":
        spec.users = list(range(args.subscribers + 1))
        x.update(window=args.window, payload=args.payload, service=args.service)
    elif w == "pep-presence":
        spec.users = list(range(args.sessions))
        x.update(nodes=args.nodes, updates=args.updates, settle=args.settle, server_pid=args.server_pid,
                     publish_concurrency=args.publish_concurrency)
    elif w == "muc":
        spec.users = list(range(args.rooms * args.occupants))
        x.update(occupants=args.occupants, talkers=min(args.talkers, args.occupants), rooms=args.rooms,
                 service=args.service)
    elif w == "muc-join":
        spec.users = list(range(args.occupants + 1))  # user0 creates the room
        x.update(join_concurrency=args.join_concurrency or args.occupants, service=args.service)
    elif w == "upload":
        spec.users = [0]
        x.update(size=int(args.size_mb * 1_000_000), rounds=args.rounds, service=args.service)
    return spec


def _specs(args: argparse.Namespace) -> list[WorkerSpec]:
    if args.workload in FEATURE:
        presence = False
    else:
        presence = not args.no_presence if args.workload == "memory" else args.presence
    sm = getattr(args, "sm", False) or args.workload == "resume"
    cfg = LoginConfig(host=args.host, port=args.port, domain=args.domain, password=args.password,
                      tls=args.tls, presence=presence, roster=getattr(args, "roster", False), mechanism=args.mechanism, timeout=args.timeout,
                      sm=sm, sm_resume=args.workload == "resume" or (sm and args.workload == "memory"),
                      carbons=args.carbons, csi=getattr(args, "csi", False),
                      websocket=args.websocket, bosh=args.bosh)
    if args.workload in FEATURE:
        spec = _feature_spec(args, cfg)
        if args.workload in SINGLE or args.procs <= 1:
            return [spec]
        procs = args.procs  # resume: shard the sessions
        specs = []
        for i in range(procs):
            part = WorkerSpec(workload=spec.workload, login=cfg, user_prefix=spec.user_prefix,
                              concurrency=max(1, args.concurrency // procs), extra=dict(spec.extra))
            part.users = spec.users[i::procs]
            specs.append(part)
        return specs
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
                spec.sm_every = args.sm_every if args.sm else 0
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
            if args.bosh:
                memory["held"] = sum(i.get("held", 0) for i in infos)

    if args.workload in ("resume", "pep-presence", "upload"):
        pid = args.server_pid or find_pid_by_port(args.port)
        if pid is None:
            print(f"note: no process found listening on port {args.port}: no RSS/CPU figures", file=sys.stderr)
        specs[0].extra["server_pid"] = pid
        if args.workload == "resume" and pid is not None:
            memory.update(server_pid=pid, rss_before_kib=rss_kib(pid))

            def on_ready(infos: list[dict[str, Any]]) -> None:
                time.sleep(args.settle)
                memory["rss_attached_kib"] = rss_kib(pid)
    if args.workload in ("throughput", "logins", "fanout", "muc"):  # server CPU per stanza/login: noise hides it less
        pid = find_pid_by_port(args.port)
        for spec in specs:
            spec.extra["server_pid"] = pid
    if args.workload in SINGLE and args.procs > 1:
        print(f"note: {args.workload} runs in one generator process (--procs ignored)", file=sys.stderr)
    infos, results = run_workers(specs, use_uvloop=not args.no_uvloop, on_ready=on_ready)
    figures = aggregate(args.workload, infos, results)
    if args.workload == "resume" and memory:
        time.sleep(args.settle)  # the server notices the dropped connections and detaches
        memory["rss_detached_kib"] = rss_kib(memory["server_pid"])
        n = figures["sessions"]
        for state in ("attached", "detached"):
            kib = memory[f"rss_{state}_kib"] - memory["rss_before_kib"]
            figures[f"{state}_bytes_per_session"] = kib * 1024 / n if n else 0.0
        figures.update(memory)
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
