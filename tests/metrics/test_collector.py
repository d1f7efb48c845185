"""The collector against a server that does not listen: module gauges come and go with
their module, a broken one costs only itself, and nothing is shared between servers."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xmppd.core.config import Config
from xmppd.server import Server


def families(text: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


@pytest.fixture
def run(tmp_path):
    def run(body) -> None:
        async def main() -> None:
            server = Server(Config(data_dir=tmp_path, storage="memory:"))
            await server.start(listen=False)
            try:
                await body(server)
            finally:
                server.modules.unload_all()
                await server.storage.close()

        asyncio.run(main())

    return run


def test_module_gauges_are_reported_and_removed_on_unload(run):
    async def body(server: Server) -> None:
        text, _ = await server.metrics.render()
        found = families(text)
        assert found["xmppd_offline_messages"].samples[0].value == 0
        assert {s.labels["state"] for s in found["xmppd_s2s_links"].samples} == {
            "ready", "connecting", "bidi"}
        server.modules.unload("offline")
        text, _ = await server.metrics.render()
        assert "xmppd_offline_messages" not in families(text)

    run(body)


def test_module_counters_are_counters(run):
    async def body(server: Server) -> None:
        sm = server.modules.loaded["sm"].module
        sm.elsewhere.handed = 3
        text, _ = await server.metrics.render()
        family = families(text)["xmppd_sm_moved_sessions"]
        assert family.type == "counter"
        assert {(s.name, s.labels["direction"], s.value) for s in family.samples
                if s.name.endswith("_total")} == {
            ("xmppd_sm_moved_sessions_total", "out", 3), ("xmppd_sm_moved_sessions_total", "in", 0)}

    run(body)


def test_a_gauge_that_fails_is_left_out_alone(run, caplog):
    async def body(server: Server) -> None:
        def broken() -> int:
            raise RuntimeError("no")

        remove = server.metrics.add_gauge("broken", "fails", broken)
        with pytest.raises(KeyError):
            server.metrics.add_gauge("broken", "twice", broken)
        text, _ = await server.metrics.render()
        found = families(text)
        assert "xmppd_broken" not in found and "xmppd_offline_messages" in found
        assert "metric xmppd_broken not read: no" in caplog.text
        remove()
        assert "broken" not in server.metrics.gauges

    run(body)
