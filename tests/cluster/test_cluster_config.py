"""``[cluster]`` settings: what the config accepts, and what a cluster node refuses."""

from __future__ import annotations

import pytest

from xmppd.cluster.membership import cluster_problems
from xmppd.core.config import ConfigError, from_dict, redis_address
from xmppd.modules.ping import Ping


def test_redis_url_and_defaults():
    config = from_dict({"cluster": {"redis": "redis://10.0.0.9:6380/3", "node": "x1"}})
    assert redis_address(config.cluster_redis) == ("10.0.0.9", 6380, 3)
    assert (config.cluster_heartbeat_s, config.cluster_ttl_s,
            config.cluster_purge_check_s) == (2.0, 6.0, 2.0)
    assert config.cluster_ttl_s + config.cluster_purge_check_s <= 12  # the bound
    assert redis_address("redis://h") == ("h", 6379, 0)
    assert from_dict({}).cluster_redis == ""  # no cluster by default


@pytest.mark.parametrize("table, message", [
    ({"redis": "http://h"}, "is not redis://"),
    ({"redis": "redis://u:p@h/0"}, "credentials"),
    ({"redis": "redis://h/x"}, "must be a number"),
    ({"node": "a:b"}, "cluster.node"),
    ({"heartbeat_s": 0}, "positive"),
    ({"heartbeat_s": 3, "ttl_s": 3}, "must be longer"),
    ({"purge": 1}, "unknown setting(s) in cluster: purge"),
])
def test_bad_settings(table, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict({"cluster": table})


def test_a_cluster_needs_shared_storage_and_safe_modules(tmp_path, monkeypatch):
    base = {"server": {"data_dir": str(tmp_path)}, "cluster": {"redis": "redis://h/0"}}
    problems = cluster_problems(from_dict(base))
    assert any("server.storage is SQLite" in p for p in problems)
    shared = {**base, "server": {**base["server"], "storage": "postgresql://u@h/db"}}
    # the default modules, muc, pep and pubsub included (their owner is the oldest node)
    assert cluster_problems(from_dict(shared)) == []
    local = {**base, "cluster": {**base["cluster"], "allow_local_storage": True}}
    assert cluster_problems(from_dict(local)) == []
    monkeypatch.setattr(Ping, "workers_safe", False)  # a module that keeps its own state
    unsafe = cluster_problems(from_dict(shared))
    assert len(unsafe) == 1 and "cannot run on several nodes yet: ping" in unsafe[0]
    monkeypatch.undo()
    workers = {**shared, "server": {**shared["server"], "workers": 2}}
    assert cluster_problems(from_dict(workers)) == []  # each worker a member of its own
    assert cluster_problems(from_dict({"server": {"data_dir": str(tmp_path)}})) == []
