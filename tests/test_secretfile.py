"""Secrets created on first use: owner-only, kept, and the same for processes that race to
create one (``xmppd run --workers N`` starts its workers together)."""

from __future__ import annotations

import multiprocessing
import stat

from xmppd.secretfile import load_or_create


def test_created_owner_only_and_kept(tmp_path):
    path = tmp_path / "key"
    first = load_or_create(path, 16)
    assert len(first) == 16 and path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(path, 16) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]  # no temporary left


def _create(path, start, out) -> None:
    start.wait()
    out.put(load_or_create(path))


def test_processes_racing_get_one_secret(tmp_path):
    ctx = multiprocessing.get_context("fork")
    path, start, out = tmp_path / "upload.key", ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_create, args=(path, start, out)) for _ in range(8)]
    for p in procs:
        p.start()
    start.set()
    got = {out.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert got == {path.read_bytes()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.key"]
