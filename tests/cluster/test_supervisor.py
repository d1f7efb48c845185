"""What ``xmppd run --workers N`` and ``xmppd check`` refuse, before anything starts."""

from __future__ import annotations

import subprocess
import sys

from xmppd.cluster.supervisor import worker_problems
from xmppd.core.config import Config, Listener
from xmppd.modules.ping import Ping


def test_one_worker_has_no_such_problems():
    assert worker_problems(Config(), 1) == []


def test_the_default_modules_run_in_several_workers(tmp_path):
    assert worker_problems(Config(c2s=(Listener("127.0.0.1", 5222),)), 2) == []
    config = tmp_path / "xmppd.toml"
    config.write_text('[server]\ndomains = ["localhost"]\ndata_dir = "data"\nworkers = 2\n'
                      '[c2s]\nlisten = ["127.0.0.1:5222"]\n')
    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_modules_that_are_not_safe_in_several_workers_are_named(monkeypatch):
    monkeypatch.setattr(Ping, "workers_safe", False)
    problems = worker_problems(Config(c2s=(Listener("127.0.0.1", 5222),)), 2)
    assert len(problems) == 1
    text = problems[0]
    assert "server.workers = 2" in text and "ping" in text
    for name in ("message", "presence", "roster", "offline", "carbons", "muc", "pubsub",
                 "pep", "bosh", "upload", "blocking", "vcard", "admin_commands"):
        assert f" {name}," not in text and f" {name} (" not in text


def test_memory_storage_components_and_port_zero_are_refused():
    config = Config(storage="memory:", components={"comp.localhost": "s"},
                    c2s=(Listener("127.0.0.1", 0),), http=(),
                    modules_enabled=("message", "roster", "presence"))
    problems = "\n".join(worker_problems(config, 3))
    assert "memory:" in problems
    assert "components" in problems
    assert "c2s listener 127.0.0.1:0" in problems
