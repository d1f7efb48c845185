"""Aggregate worker results, compare with the stub ceiling, print a table, append JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .workloads import percentiles

#: Headline metric per workload and whether bigger is better.
HEADLINE: dict[str, tuple[str, bool]] = {
    "logins": ("logins_per_s", True),
    "throughput": ("msgs_per_s", True),
    "latency": ("p50_ms", False),
    "memory": ("bytes_per_session", False),
    "mam-page": ("p50_ms", False),
    "resume": ("resumptions_per_s", True),
    "fanout": ("notifications_per_s", True),
    "pep-presence": ("bytes_per_user", False),
    "muc": ("msgs_per_s", True),
    "muc-join": ("joins_per_s", True),
    "upload": ("put_mb_per_s", True),
}

#: Parameters that must match for a stub run to serve as this run's ceiling.
_CEILING_KEYS: dict[str, tuple[str, ...]] = {
    "logins": ("tls", "concurrency"),
    "throughput": ("tls", "pairs", "window", "body_size", "procs", "sm", "sm_every", "websocket", "bosh"),
    "latency": ("tls", "pairs", "rate", "procs"),
    "memory": (),
    "mam-page": ("tls", "clients", "page", "last_page"),
    "resume": ("tls", "sessions", "concurrency"),
    "fanout": ("tls", "subscribers", "window"),
    "pep-presence": (),
    "muc": ("tls", "rooms", "occupants", "talkers", "window"),
    "muc-join": ("tls", "occupants"),
    "upload": ("size_mb",),
}
#: Parameter values of records written before the parameter existed.
_OFF: dict[str, Any] = {"sm": False, "sm_every": 0, "websocket": "", "bosh": ""}
#: Workloads whose headline is not a rate the stub can bound (memory-like figures).
_NO_CEILING = ("memory", "pep-presence", "upload")


def aggregate(workload: str, infos: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-worker results into the run's figures."""
    out: dict[str, Any] = {}
    if workload == "logins":
        ok = sum(r["ok"] for r in results)
        elapsed = max(r["elapsed"] for r in results)
        times = [t * 1e3 for r in results for t in r["login_times"]]
        out = {"logins_per_s": ok / elapsed if elapsed else 0.0, "ok": ok,
               "errors": sum(r["errors"] for r in results), "elapsed_s": elapsed,
               "pbkdf2_runs_untimed": sum(i.get("pbkdf2_runs", 0) for i in infos)}
        own = sum(r.get("generator_cpu_s", 0.0) for r in results)
        if ok and own:  # what the generator could do on one core of its own: its ceiling
            out["generator_cpu_us_per_login"] = own * 1e6 / ok
            out["generator_ceiling_per_s"] = ok / own
        cpu = [r["server_cpu_s"] for r in results if r.get("server_cpu_s") is not None]
        if cpu and ok:  # /proc ticks are 10 ms: meaningful over thousands of logins
            out["server_cpu_us_per_login"] = max(cpu) * 1e6 / ok
        out.update({f"login_{k}_ms": v for k, v in percentiles(times).items()})
        samples = [e for r in results for e in r["error_samples"]]
        if samples:
            out["error_samples"] = samples[:3]
    elif workload == "throughput":
        out = {"msgs_per_s": sum(r["delivered"] / r["window_s"] for r in results),
               "delivered": sum(r["delivered"] for r in results),
               "sent": sum(r["sent"] for r in results), "received": sum(r["received"] for r in results),
               "lost": sum(r["lost"] for r in results), "drain_s": max(r["drain_s"] for r in results)}
        cpu = [r["server_cpu_s"] for r in results if r.get("server_cpu_s") is not None]
        if cpu and out["delivered"]:  # every worker measured the same server over ~the same window
            out["server_cpu_us_per_msg"] = max(cpu) * 1e6 / out["delivered"]
        requests = [r["http_requests"] for r in results if r.get("http_requests") is not None]
        if requests and out["received"]:  # BOSH: HTTP requests per delivered message (batching)
            out["http_requests_per_msg"] = sum(requests) / out["received"]
    elif workload == "latency":
        lat = [ns / 1e6 for r in results for ns in r["latencies_ns"]]
        out = {f"{k}_ms": v for k, v in percentiles(lat).items()}
        out.update({"samples": len(lat), "sent": sum(r["sent"] for r in results),
                    "received": sum(r["received"] for r in results),
                    "lost": sum(r["lost"] for r in results),
                    "max_send_lag_ms": max(r["max_send_lag_ns"] for r in results) / 1e6,
                    "drain_s": max(r["drain_s"] for r in results)})
        # A backlog still draining a second after sending stopped: the rate was not sustained.
        out["rate_sustained"] = out["drain_s"] < 1.0
    elif workload == "memory":
        out = {"sessions": sum(r["sessions"] for r in results), "errors": sum(r["errors"] for r in results)}
    elif workload == "resume":
        merged = {k: sum(r[k] for r in results) for k in ("ok", "errors", "sessions")}
        merged.update(elapsed=max(r["elapsed"] for r in results),
                      resume_times=[t for r in results for t in r["resume_times"]],
                      error_samples=[e for r in results for e in r["error_samples"]])
        out = _aggregate_feature(workload, merged)
    else:
        out = _aggregate_feature(workload, results[0])
    return out


def _kib_per(after: int | None, before: int | None, n: int) -> float | None:
    if after is None or before is None or not n:
        return None
    return (after - before) * 1024 / n


def _cpu_per(r: dict[str, Any], n: int) -> float | None:
    """Server CPU µs per delivered stanza over the timed window (None without a pid)."""
    cpu = r.get("server_cpu_s")
    return cpu * 1e6 / n if cpu is not None and n else None


def _aggregate_feature(workload: str, r: dict[str, Any]) -> dict[str, Any]:
    """Figures of the single-process feature workloads (loadgen/features.py)."""
    out: dict[str, Any] = {}
    if workload == "mam-page":
        lat = [ns / 1e6 for ns in r["latencies_ns"]]
        out = {f"{k}_ms": v for k, v in percentiles(lat).items()}
        out.update({"queries_per_s": r["queries"] / r["window_s"] if r["window_s"] else 0.0,
                    "items_per_s": r["items"] / r["window_s"] if r["window_s"] else 0.0,
                    "queries": r["queries"], "errors": r["errors"], "fill_s": r["fill_s"]})
    elif workload == "resume":
        times = [t * 1e3 for t in r["resume_times"]]
        out = {"resumptions_per_s": r["ok"] / r["elapsed"] if r["elapsed"] else 0.0, "ok": r["ok"],
               "errors": r["errors"], "elapsed_s": r["elapsed"]}
        out.update({f"resume_{k}_ms": v for k, v in percentiles(times).items()})
        out["sessions"] = r["sessions"]  # RSS figures: added by load.py (read from the parent)
        if r["error_samples"]:
            out["error_samples"] = r["error_samples"][:3]
    elif workload == "fanout":
        lat = [ns / 1e6 for ns in r["latencies_ns"]]
        out = {"notifications_per_s": r["delivered"] / r["window_s"] if r["window_s"] else 0.0,
               "items_per_s": r["items_done"] / r["window_s"] if r["window_s"] else 0.0}
        out.update({f"publish_{k}_ms": v for k, v in percentiles(lat).items()})
        out.update({k: r[k] for k in ("subscribers", "published", "received", "lost", "drain_s")})
        out["server_cpu_us_per_notification"] = _cpu_per(r, r["delivered"])
    elif workload == "pep-presence":
        n = r["sessions"]
        out = {"bytes_per_user": _kib_per(r["rss_full_kib"], r["rss_before_kib"], n),
               "pep_caps_bytes_per_user": _kib_per(r["rss_full_kib"], r["rss_sessions_kib"], n),
               "presences_per_s": r["presences"] / r["elapsed"] if r["elapsed"] else 0.0,
               "cpu_us_per_presence": (r["server_cpu_s"] * 1e6 / r["presences"]
                                       if r["server_cpu_s"] is not None and r["presences"] else None)}
        out.update({k: r[k] for k in ("sessions", "presences", "pongs", "server_cpu_s", "disco_answered",
                                       "presences_received", "rss_before_kib", "rss_full_kib")})
        out["errors"] = n - r["pongs"]
    elif workload == "muc":
        lat = [ns / 1e6 for ns in r["latencies_ns"]]
        out = {"msgs_per_s": r["delivered"] / r["window_s"] if r["window_s"] else 0.0}
        out.update({f"{k}_ms": v for k, v in percentiles(lat).items()})
        out.update({k: r[k] for k in ("delivered", "sent", "echoed", "lost", "drain_s")})
        out["server_cpu_us_per_delivery"] = _cpu_per(r, r["delivered"])
    elif workload == "upload":
        mb = r["size"] / 1e6
        puts, gets = r["put_s"], r["get_s"]
        out = {"put_mb_per_s": mb * len(puts) / sum(puts) if puts else 0.0,
               "get_mb_per_s": mb * len(gets) / sum(gets) if gets else 0.0}
        if puts:
            out["put_best_mb_per_s"] = mb / min(puts)
        if gets:
            out["get_best_mb_per_s"] = mb / min(gets)
        before, peak = r["rss_before_kib"], r["rss_peak_kib"]
        out["rss_growth_kib"] = peak - before if before is not None and peak is not None else None
        out.update({k: r[k] for k in ("rss_before_kib", "rss_peak_kib", "rss_after_kib", "errors")})
        out["rounds"] = len(gets)
        if r["error_samples"]:
            out["error_samples"] = r["error_samples"]
    elif workload == "muc-join":
        times = [t * 1e3 for t in r["join_times"]]
        out = {"joins_per_s": r["ok"] / r["elapsed"] if r["elapsed"] else 0.0, "ok": r["ok"],
               "errors": r["errors"], "elapsed_s": r["elapsed"]}
        out.update({f"join_{k}_ms": v for k, v in percentiles(times).items()})
        if r["error_samples"]:
            out["error_samples"] = r["error_samples"][:3]
    return out


def find_ceiling(path: str | None, record: dict[str, Any]) -> dict[str, Any] | None:
    """Latest stub record in ``path`` with the same workload and key parameters."""
    if not path or not Path(path).exists():
        return None
    keys = _CEILING_KEYS[record["workload"]]
    best = None
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("target") != "stub" or rec.get("workload") != record["workload"]:
            continue
        if all(rec["params"].get(k, _OFF.get(k)) == record["params"].get(k, _OFF.get(k)) for k in keys):
            best = rec
    return best


def attach_ceiling(record: dict[str, Any], ceiling: dict[str, Any] | None) -> None:
    """Add ``ceiling`` and the ``generator_bound`` flag (result within 2x of the ceiling).

    A logins result also carries the generator's own ceiling (``generator_ceiling_per_s``):
    within 2x of it is generator-bound too, with or without a stub run.
    """
    metric, bigger_better = HEADLINE[record["workload"]]
    value = record["results"].get(metric)
    own = record["results"].get("generator_ceiling_per_s")
    if own and value is not None:
        record["generator_bound"] = value * 2 >= own
    if ceiling is None or value is None or record["workload"] in _NO_CEILING:
        return
    limit = ceiling["results"].get(metric)
    if not limit:
        return
    record["ceiling"] = {metric: limit}
    bound = value * 2 >= limit if bigger_better else value <= 2 * limit
    record["generator_bound"] = bound or record.get("generator_bound", False)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(record: dict[str, Any]) -> None:
    """Human-readable summary of one run."""
    params = " ".join(f"{k}={v}" for k, v in record["params"].items())
    print(f"== {record['workload']} against {record['target']} ({record['host']}:{record['port']}) {params}")
    metric, _ = HEADLINE[record["workload"]]
    width = max(len(k) for k in record["results"]) + 2
    for key, value in record["results"].items():
        mark = " <==" if key == metric else ""
        print(f"  {key:<{width}}{_fmt(value):>16}{mark}")
    flag = "GENERATOR-BOUND" if record.get("generator_bound") else "ok"
    if "ceiling" in record:
        limit = record["ceiling"][metric]
        print(f"  {'stub ceiling':<{width}}{_fmt(limit):>16}  [{flag}]")
    elif "generator_bound" in record:
        print(f"  {'(own ceiling)':<{width}}{'':>16}  [{flag}]")


def append_json(path: str | None, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line."""
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
