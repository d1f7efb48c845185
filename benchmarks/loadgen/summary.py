"""Side-by-side table of a compare.sh results file: one row per workload and parameters.

    python -m loadgen.summary results.jsonl      (from the benchmarks/ directory)
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .report import HEADLINE

_ROW_KEYS = {
    "throughput": ("features", "pairs", "window", "tls", "websocket", "bosh"),
    "latency": ("pairs", "rate", "tls"),
    "logins": ("sessions", "concurrency", "tls"),
    "memory": ("sessions", "tls", "bosh"),
    "mam-page": ("features", "clients", "page"),
    "resume": ("features", "sessions", "tls"),
    "fanout": ("features", "subscribers", "window"),
    "pep-presence": ("features", "sessions", "nodes"),
    "muc": ("features", "rooms", "occupants", "talkers"),
    "muc-join": ("features", "occupants"),
    "upload": ("size_mb", "rounds"),
}
#: Older records have no "features" (plain) or "sm"/"carbons" (off): rows stay comparable.
_DEFAULTS = {"features": "plain", "sm": False, "carbons": False, "websocket": "", "bosh": ""}
_EXTRA = {"latency": ("p90_ms", "p99_ms", "max_ms", "rate_sustained"),
          "throughput": ("lost", "server_cpu_us_per_msg", "http_requests_per_msg"),
          "logins": ("errors",), "mam-page": ("p99_ms", "queries_per_s"),
          "resume": ("errors", "detached_bytes_per_session"), "fanout": ("server_cpu_us_per_notification", "publish_p99_ms", "lost"),
          "pep-presence": ("cpu_us_per_presence", "presences_per_s", "errors"), "muc": ("server_cpu_us_per_delivery", "p99_ms", "lost"),
          "muc-join": ("errors", "join_p99_ms"),
          "upload": ("get_mb_per_s", "rss_growth_kib", "errors"),
          "memory": ("held",)}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def summarize(records: list[dict[str, Any]]) -> str:
    """Latest record per (workload, row parameters, target), targets side by side."""
    targets: list[str] = []
    rows: dict[tuple[str, tuple[Any, ...]], dict[str, dict[str, Any]]] = {}
    for rec in records:
        keys = tuple(rec["params"].get(k, _DEFAULTS.get(k)) for k in _ROW_KEYS[rec["workload"]])
        rows.setdefault((rec["workload"], keys), {})[rec["target"]] = rec
        if rec["target"] not in targets:
            targets.append(rec["target"])
    lines = []
    header = f"{'workload':<13}{'params':<58}{'metric':<28}" + "".join(f"{t:>14}" for t in targets)
    if "xmppd" in targets and "prosody" in targets:
        header += f"{'xmppd/prosody':>15}"
    lines.append(header)
    lines.append("-" * len(header))
    for (workload, keys), by_target in rows.items():
        metric, _ = HEADLINE[workload]
        params = " ".join(f"{k}={v}" for k, v in zip(_ROW_KEYS[workload], keys, strict=True))
        for m in (metric, *_EXTRA.get(workload, ()), "loadavg_1m"):
            cells = []
            for t in targets:
                rec = by_target.get(t)
                value = rec["results"].get(m) if rec else None
                flag = "*" if m == metric and rec and rec.get("generator_bound") else " "
                cells.append(f"{_fmt(value):>13}{flag}")
            line = (f"{workload if m == metric else '':<13}{params if m == metric else '':<58}{m:<28}"
                    + "".join(cells))
            x, p = by_target.get("xmppd"), by_target.get("prosody")
            if (x and p and p["results"].get(m) and not isinstance(p["results"][m], bool) and m != "loadavg_1m"
                    and isinstance(x["results"].get(m), (int, float))):
                line += f"{x['results'].get(m, 0) / p['results'][m]:>14.2f}x"
            lines.append(line)
    lines.append("* generator-bound: within 2x of the generator's ceiling measured against the stub")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the side-by-side table for a JSONL file."""
    path = (argv or sys.argv[1:])[0]
    with open(path) as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    print(summarize(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
