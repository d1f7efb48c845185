#!/usr/bin/env python3
"""Server memory per idle client session, measured so that it can be trusted (issue #18).

For each feature set (``plain``; ``mobile``: stream management with resumption, carbons and
CSI inactive, as ``load.py --carbons memory --sm --csi``) and each transport (no TLS, STARTTLS),
``--runs`` times: a fresh xmppd (default modules, its own data directory, accounts provisioned
once), ``load.py memory -n N`` against it, and the server's VmRSS growth per session.  With
N in the thousands a run repeats to within a few bytes (at 2 000 the figure moved by ±600 B:
start-up costs are spread over few sessions); the table gives the median and the spread.

    PYTHONPATH=src python benchmarks/idle_memory.py -n 10000 --runs 2
    PYTHONPATH=src python benchmarks/idle_memory.py -n 10000 --sets mobile --tls no

``--trace N`` instead runs one server under ``tracemalloc`` (N sessions; slower, so fewer),
snapshots before and after the logins and prints the lines that hold the most per session:
what Python allocated, by the line that allocated it (allocations made from C without a
Python frame, e.g. uvloop's transports, land on the event loop's ``run_until_complete``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cluster_link import free_port, wait_port  # noqa: E402
from provision import provision_xmppd, xmppd_config  # noqa: E402

#: feature set -> (load.py options, ``memory`` workload options)
SETS = {"plain": ([], []), "mobile": (["--carbons"], ["--sm", "--csi"])}

# Run as the server under --trace: snapshots on request (a file appears), so that the
# measured process is the server itself and nothing else runs in it.
TRACER = """\
import os, sys, threading, time, tracemalloc, gc
tracemalloc.start(int(sys.argv[1]))
request, done = sys.argv[2], sys.argv[3]
def watch():
    n = 0
    while True:
        time.sleep(0.1)
        if os.path.exists(request):
            os.unlink(request)
            gc.collect()
            tracemalloc.take_snapshot().dump(f"{done}.{n}")
            n += 1
            open(done, "w").close()
threading.Thread(target=watch, daemon=True).start()
from xmppd.cli import main
sys.exit(main(sys.argv[4:]))
"""


class Bench:
    def __init__(self, work: Path, sessions: int, server_cpu: str | None, load_cpu: str | None) -> None:
        self.work, self.sessions = work, sessions
        self.server_cpu, self.load_cpu = server_cpu, load_cpu
        self.port = free_port()
        self.config = work / "xmppd.toml"
        self.config.write_text(xmppd_config(work / "data", self.port))
        provision_xmppd(str(self.config), [f"user{i}@localhost" for i in range(sessions)], "bench")

    def _pinned(self, cpu: str | None, argv: list[str]) -> list[str]:
        return ["taskset", "-c", cpu, *argv] if cpu else argv

    def start(self, prefix: list[str]) -> subprocess.Popen:
        (self.work / "data" / "xmppd.lock").unlink(missing_ok=True)
        log = self.work / "server.log"
        proc = subprocess.Popen(self._pinned(self.server_cpu, [sys.executable, *prefix]),
                                stdout=log.open("w"), stderr=subprocess.STDOUT)
        wait_port(self.port, proc, log, timeout=120)
        time.sleep(1.0)  # start-up work after the listener opened (module loads, caches)
        return proc

    def load(self, features: str, tls: bool, pid: int, settle: float) -> dict:
        out = self.work / "load.json"
        out.unlink(missing_ok=True)
        options, workload = SETS[features]
        argv = [sys.executable, str(HERE / "load.py"), "--port", str(self.port), "--domain",
                "localhost", "--password", "bench", "--timeout", "120", "--json", str(out),
                *(["--tls"] if tls else []), *options, "memory", "-n", str(self.sessions),
                "-c", "50", "--server-pid", str(pid), "--settle", str(settle), *workload]
        subprocess.run(self._pinned(self.load_cpu, argv), check=True, capture_output=True)
        return json.loads(out.read_text().splitlines()[-1])["results"]

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(bench: Bench, sets: list[str], transports: list[bool], runs: int) -> None:
    print(f"{'set':8} {'TLS':4} {'n':>6} {'runs':>4} {'median B':>9} {'min':>7} {'max':>7}")
    for features in sets:
        for tls in transports:
            figures = []
            for _ in range(runs):
                proc = bench.start(["-m", "xmppd.cli", "--config", str(bench.config), "run"])
                try:
                    result = bench.load(features, tls, proc.pid, settle=2.0)
                finally:
                    bench.stop(proc)
                if result.get("errors"):
                    raise SystemExit(f"{result['errors']} logins failed: {result}")
                figures.append(result["bytes_per_session"])
            print(f"{features:8} {'yes' if tls else 'no':4} {bench.sessions:>6} {runs:>4} "
                  f"{statistics.median(figures):>9.0f} {min(figures):>7.0f} {max(figures):>7.0f}",
                  flush=True)


def trace(bench: Bench, features: str, tls: bool, depth: int, top: int) -> None:
    import threading
    import tracemalloc

    request, done = bench.work / "snap.request", bench.work / "snap.done"
    tracer = bench.work / "tracer.py"
    tracer.write_text(TRACER)
    proc = bench.start([str(tracer), str(depth), str(request), str(done),
                        "--config", str(bench.config), "run"])

    def snapshot() -> tracemalloc.Snapshot:
        n = len(list(bench.work.glob("snap.done.*")))
        done.unlink(missing_ok=True)
        request.touch()
        while not done.exists():
            time.sleep(0.1)
        return tracemalloc.Snapshot.load(f"{done}.{n}")

    try:
        before = snapshot()
        # the generator holds its sessions for --settle seconds: snapshot meanwhile, once
        # the server's RSS has stopped growing
        worker = threading.Thread(target=bench.load, args=(features, tls, proc.pid, 30.0))
        worker.start()
        last = -1
        while True:
            time.sleep(3)
            rss = _rss_kib(proc.pid)
            if rss == last:
                break
            last = rss
        after = snapshot()
        worker.join()
    finally:
        bench.stop(proc)
    n = bench.sessions
    stats = after.compare_to(before, "traceback" if depth > 1 else "lineno")
    print(f"traced growth: {sum(s.size_diff for s in stats) / n:.0f} B per session "
          f"({features}, TLS {'yes' if tls else 'no'}, n={n})")
    for stat in stats[:top]:
        frames = list(stat.traceback)[::-1][:depth]
        where = " <- ".join(f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno}" for f in frames)
        print(f"{stat.size_diff / n:8.1f} B {stat.count_diff / n:5.2f} objects  {where}")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--sessions", type=int, default=10000)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--sets", default="plain,mobile", help="plain, mobile (SM + carbons + CSI)")
    p.add_argument("--tls", choices=("no", "yes", "both"), default="both")
    p.add_argument("--server-cpu", default="0" if os.cpu_count() and os.cpu_count() > 1 else None)
    p.add_argument("--load-cpu", default="1" if os.cpu_count() and os.cpu_count() > 1 else None)
    p.add_argument("--trace", type=int, metavar="N", help="tracemalloc attribution with N sessions")
    p.add_argument("--depth", type=int, default=1, help="--trace: frames per allocation")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    sets = args.sets.split(",")
    transports = {"no": [False], "yes": [True], "both": [False, True]}[args.tls]
    with tempfile.TemporaryDirectory(prefix="xmppd-idle-") as work:
        bench = Bench(Path(work), args.trace or args.sessions, args.server_cpu, args.load_cpu)
        if args.trace:
            trace(bench, sets[-1], transports[-1], args.depth, args.top)
        else:
            measure(bench, sets, transports, args.runs)


if __name__ == "__main__":
    main()
