"""docs/grafana-dashboard.json: valid JSON whose every query names metrics the server
exposes (a renamed metric must not leave a dashboard panel silently empty)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from xmppd.core.config import Config
from xmppd.core.manager import DEFAULT_MODULES
from xmppd.server import Server

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


def exposed(tmp_path: Path) -> set[str]:
    """Every sample name a server with all the reporting modules exposes (also of the
    families that have no sample yet, e.g. no login happened)."""
    async def main() -> bytes:
        server = Server(Config(data_dir=tmp_path, storage="memory:",
                               modules_enabled=(*DEFAULT_MODULES, "mam"),
                               components={"comp.localhost": "secret"}))
        await server.start(listen=False)
        try:
            return (await server.metrics.render())[0]
        finally:
            server.modules.unload_all()
            await server.storage.close()

    text = asyncio.run(main()).decode()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    return {f.name + suffix for f in text_string_to_metric_families(text)
            for suffix in suffixes.get(f.type, ("",))}


def test_every_dashboard_query_names_an_exposed_metric(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    names = {n for e in exprs for n in re.findall(r"\b((?:xmppd|process)_[a-z_]+)\b", e)}
    assert names - exposed(tmp_path) == set()
    # the instance variable is built from a metric that exists too
    query = dashboard["templating"]["list"][0]["definition"]
    assert re.search(r"label_values\((\w+),", query).group(1) in exposed(tmp_path)
