#!/usr/bin/env python3
"""What crossing processes costs end to end: routed messages over TCP when every stanza goes
to a session on another worker (Unix link) or another node (Redis), against one process.

Starts the servers itself (a throwaway ``redis-server`` too), on loopback ports, with the
default modules and SQLite (the Redis nodes each get a copy of the provisioned data
directory: ``cluster.allow_local_storage``; routing reads no storage).  Each mode logs in
``--pairs`` pairs, keeps ``--window`` messages in flight each way, and counts deliveries and
the servers' CPU time (utime + stime from /proc) over ``--duration`` seconds:

- ``single``: one process, no cluster (the reference);
- ``workers-local`` / ``workers-cross``: ``xmppd run --workers 2``; sessions are placed by
  the kernel, so the generator logs in more accounts than it needs, asks ``xmppd workers``
  where each landed and pairs them on the same worker or across the two;
- ``workers``: the same two workers, pairs as the kernel placed them (about half of them
  across): what a deployment sees, for the scaling figure;
- ``redis-local`` / ``redis-cross``: two nodes on one Redis, both ends of each pair on node
  A, or senders on A and receivers on B.

The figure that matters on a shared 2-core box is server CPU per delivered message (all
server processes summed; Redis's own CPU shown apart): the share of the single-node figure
is ``single µs / mode µs`` — what a node keeps of its single-process throughput when all
its traffic crosses.  Messages/s are shown too, but the generator shares the cores.

``--server-cpus 0 --gen-cpus 1`` pins the servers (workers and Redis included) and the
generator apart: one process and two workers then run on the same cores.

    PYTHONPATH=src python benchmarks/cluster_routing.py [--pairs 50] [--duration 5] \
        [--server-cpus 0 --gen-cpus 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_link import free_port, start_redis, wait_port  # noqa: E402
from loadgen.client import LoginConfig, Session  # noqa: E402
from loadgen.workloads import _drain, _Flow, _message, _RunState, login_many, proc_cpu_s  # noqa: E402
from provision import provision_xmppd, xmppd_config  # noqa: E402

DOMAIN = "localhost"
PASSWORD = "bench"
MODES = ("single", "workers", "workers-local", "workers-cross", "redis-local", "redis-cross")


def cluster_section(redis_url: str, node: str) -> str:
    return f"""
[cluster]
redis = "{redis_url}"
node = "{node}"
allow_local_storage = true
"""


class Bench:
    """The servers of one run, in a temporary directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="xmppd-cluster-bench."))
        self.procs: list[subprocess.Popen] = []
        self.redis: subprocess.Popen | None = None
        self.accounts = 3 * args.pairs
        self.template = self.work / "template"
        cfg = self.work / "template.toml"
        cfg.write_text(xmppd_config(self.template, free_port(), DOMAIN))
        provision_xmppd(str(cfg), [f"user{i}@{DOMAIN}" for i in range(self.accounts)], PASSWORD)

    def node(self, name: str, cluster: str = "", workers: int = 1) -> tuple[int, Path, subprocess.Popen]:
        """Start one server (a copy of the provisioned data directory); returns its port,
        config and process."""
        data = self.work / name
        shutil.copytree(self.template, data)
        port = free_port()
        cfg = self.work / f"{name}.toml"
        cfg.write_text(xmppd_config(data, port, DOMAIN, cluster))
        argv = [sys.executable, "-m", "xmppd.cli", "--config", str(cfg), "run"]
        if workers > 1:
            argv += ["--workers", str(workers)]
        if self.args.server_cpus:  # (inherited by a supervisor's workers)
            argv = ["taskset", "-c", self.args.server_cpus, *argv]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(self.work / f"{name}.log", "w"))
        self.procs.append(proc)
        wait_port(port, proc, self.work / f"{name}.log")
        return port, cfg, proc

    def start_redis(self) -> str:
        self.redis, url = start_redis(str(self.work))
        if self.args.server_cpus:
            os.sched_setaffinity(self.redis.pid, cpu_list(self.args.server_cpus))
        return url

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait()
            self.redis = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def cpu_list(text: str) -> set[int]:
    """``0`` or ``0,2`` or ``0-3`` (taskset's form) as a set of CPUs."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def all_pids(proc: subprocess.Popen) -> list[int]:
    """The process and its children (a supervisor's workers)."""
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
    return [proc.pid, *(int(p) for p in out.split())]


def proc_syscalls(pid: int) -> tuple[int, int]:
    """(read, write) system calls of ``pid`` so far (/proc/<pid>/io: reads and writes on
    sockets too, the ones that tell how well output is batched)."""
    with open(f"/proc/{pid}/io") as fh:
        fields = dict(line.split(": ") for line in fh.read().splitlines())
    return int(fields["syscr"]), int(fields["syscw"])


def profile(pids: list[int], args: argparse.Namespace) -> list[subprocess.Popen]:
    """``--profile DIR``: py-spy (raw, folded stacks; ``--perf``: perf record) on each server
    process that does work (not a supervisor) over the measured window; the sampling costs
    CPU: the figures of a profiled run are not comparable."""
    if not args.profile:
        return []
    spies = []
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
        if b"--workers" in argv and b"--worker" not in argv:
            continue  # the supervisor: idle
        seconds = str(max(1, int(args.duration)))
        if args.perf:
            out = Path(args.profile) / f"{args.mode_now}-{pid}.perf"
            argv = ["perf", "record", "-q", "-F", "999", "-p", str(pid), "-o", str(out),
                    "--", "sleep", seconds]
        else:
            out = Path(args.profile) / f"{args.mode_now}-{pid}.txt"
            argv = [args.py_spy, "record", "-p", str(pid), "--format", "raw", "--nonblocking",
                    "-r", "250", "-d", seconds, "-o", str(out)]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def cfg_for(port: int) -> LoginConfig:
    return LoginConfig(host="127.0.0.1", port=port, domain=DOMAIN, password=PASSWORD)


async def login(port: int, users: list[int]) -> dict[int, Session]:
    sessions, _, errors = await login_many(cfg_for(port), [f"user{i}" for i in users], 50, close=False)
    if errors:
        raise SystemExit(f"{len(errors)} logins failed, e.g. {errors[0]}")
    return {int(s.jid.split("@", 1)[0][4:]): s for s in sessions}


async def measure(pairs: list[tuple[Session, Session]], pids: list[int], redis_pid: int | None,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop flows both ways over ``pairs``; deliveries and CPU over the window."""
    state = _RunState()
    flows = []
    for a, b in pairs:
        for sender, receiver in ((a, b), (b, a)):
            flow = _Flow(sender, _message(receiver.jid, b"x" * 64), state)
            receiver.on_data = flow.on_data
            flows.append(flow)
    state.running = True
    for flow in flows:
        flow.sender.write(flow.msg * args.window)
        flow.sent = args.window
    await asyncio.sleep(args.warmup)
    cpu0 = sum(proc_cpu_s(p) for p in pids)
    sys0 = [sum(c) for c in zip(*(proc_syscalls(p) for p in pids), strict=True)]
    rcpu0 = proc_cpu_s(redis_pid) if redis_pid else 0.0
    t0, r0 = time.perf_counter(), sum(f.received for f in flows)
    spies = profile(pids, args)
    await asyncio.sleep(args.duration)
    t1, r1 = time.perf_counter(), sum(f.received for f in flows)
    cpu = sum(proc_cpu_s(p) for p in pids) - cpu0
    reads, writes = (sum(c) - c0 for c, c0 in
                     zip(zip(*(proc_syscalls(p) for p in pids), strict=True), sys0, strict=True))
    rcpu = (proc_cpu_s(redis_pid) - rcpu0) if redis_pid else 0.0
    state.running = False
    for spy in spies:
        spy.wait()
    await _drain(lambda: sum(f.sent - f.received for f in flows), 10.0)
    lost = sum(f.sent - f.received for f in flows)
    for a, b in pairs:
        a.close()
        b.close()
    n = r1 - r0
    return {"delivered": n, "msg_s": n / (t1 - t0), "server_us": cpu / n * 1e6 if n else None,
            "redis_us": rcpu / n * 1e6 if n else None, "lost": lost,
            "reads_per_msg": reads / n if n else None, "writes_per_msg": writes / n if n else None}


def placement(cfg: Path) -> dict[int, int]:
    """user index → worker, from the control socket (``xmppd workers``)."""
    out = subprocess.run([sys.executable, "-m", "xmppd.cli", "--config", str(cfg), "workers"],
                         capture_output=True, text=True, check=True).stdout
    where: dict[int, int] = {}
    worker = -1
    for line in out.splitlines():
        if line.startswith("worker "):
            worker = int(line.split()[1].rstrip(":"))
        elif line.strip().startswith("user"):
            where[int(line.strip().split("@", 1)[0][4:])] = worker
    return where


async def run_mode(bench: Bench, mode: str) -> dict[str, Any]:
    args = bench.args
    n = args.pairs
    if mode == "single":
        port, _, proc = bench.node("single")
        sessions = await login(port, list(range(2 * n)))
        pairs = [(sessions[2 * k], sessions[2 * k + 1]) for k in range(n)]
        return await measure(pairs, all_pids(proc), None, args)
    if mode.startswith("workers"):
        port, cfg, proc = bench.node(mode, workers=2)
        time.sleep(1.0)  # both workers up and linked
        sessions = await login(port, list(range(bench.accounts)))
        await asyncio.sleep(0.5)
        where = placement(cfg)
        by_worker: dict[int, list[Session]] = {0: [], 1: []}
        for user, session in sessions.items():
            by_worker[where[user]].append(session)
        w0, w1 = by_worker[0], by_worker[1]
        if mode == "workers":
            pairs = [(sessions[2 * k], sessions[2 * k + 1]) for k in range(n)]
        elif mode == "workers-cross":
            pairs = list(zip(w0, w1, strict=False))[:n]
        else:
            pairs = (list(zip(w0[0::2], w0[1::2], strict=False)) + list(zip(w1[0::2], w1[1::2], strict=False)))[:n]
        used = {id(s) for p in pairs for s in p}
        for s in sessions.values():
            if id(s) not in used:
                s.close()
        if len(pairs) < n:
            raise SystemExit(f"{mode}: only {len(pairs)} pairs placed (sessions {len(w0)}/{len(w1)})")
        return await measure(pairs, all_pids(proc), None, args)
    url = bench.start_redis()
    port_a, _, proc_a = bench.node(f"{mode}-a", cluster_section(url, "a"))
    port_b, _, proc_b = bench.node(f"{mode}-b", cluster_section(url, "b"))
    time.sleep(1.0)
    first = await login(port_a, list(range(n)))
    second = await login(port_a if mode == "redis-local" else port_b, list(range(n, 2 * n)))
    await asyncio.sleep(0.5)  # registry rows replicated
    pairs = [(first[k], second[n + k]) for k in range(n)]
    return await measure(pairs, all_pids(proc_a) + all_pids(proc_b), bench.redis.pid, args)  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", help="append one JSON line per mode to this file")
    parser.add_argument("--profile", metavar="DIR",
                        help="record py-spy folded stacks of each server process into DIR")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--perf", action="store_true",
                        help="with --profile: perf record (C and kernel symbols) instead")
    parser.add_argument("--server-cpus", metavar="CPUS",
                        help="pin the servers and Redis to these CPUs (taskset's form: 0, 0-1)")
    parser.add_argument("--gen-cpus", metavar="CPUS", help="pin the load generator (this process)")
    args = parser.parse_args()
    if args.gen_cpus:
        os.sched_setaffinity(0, cpu_list(args.gen_cpus))
    bench = Bench(args)
    results: dict[str, dict[str, Any]] = {}
    try:
        for mode in args.modes.split(","):
            args.mode_now = mode
            results[mode] = asyncio.run(run_mode(bench, mode))
            bench.stop()
    finally:
        bench.cleanup()
    ref = results.get("single", {}).get("server_us")
    print(f"{'mode':<14} {'msg/s':>9} {'server µs/msg':>14} {'redis µs/msg':>13} {'share':>6} {'lost':>5}"
          f" {'reads/msg':>9} {'writes/msg':>10}")
    for mode, r in results.items():
        share = f"{ref / r['server_us']:.0%}" if ref and r["server_us"] else "-"
        print(f"{mode:<14} {r['msg_s']:9.0f} {r['server_us']:14.1f} {r['redis_us'] or 0:13.1f} {share:>6} {r['lost']:5d}"
              f" {r['reads_per_msg'] or 0:9.3f} {r['writes_per_msg'] or 0:10.3f}")
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({"mode": mode, **r, "pairs": args.pairs, "at": time.time()}) + "\n")


if __name__ == "__main__":
    main()
