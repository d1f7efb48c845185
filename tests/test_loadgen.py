"""The benchmark load generator against the stub server: every workload runs, nothing is lost.

Small counts, a few seconds in all; no timing assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import load  # noqa: E402
import provision  # noqa: E402
from loadgen.scram import ScramClient  # noqa: E402


def _start_stub(*extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "stub_server.py"), "--port", "0", "--lifetime", "120", *extra],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "stub listening on HOST:PORT pid N"
    assert "listening" in line, line
    return proc, int(line.split()[3].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def stub() -> Iterator[int]:
    proc, port = _start_stub("--tls")
    yield port
    proc.terminate()
    proc.wait(10)


def _run(port: int, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "runs.jsonl"
    rc = load.main(["--port", str(port), "--target", "stub", "--json", str(out), *args])
    record = json.loads(out.read_text().splitlines()[-1])
    assert rc == 0, record
    return record


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_logins(stub: int, tmp_path: Path, tls: bool) -> None:
    record = _run(stub, tmp_path, *(["--tls"] if tls else []), "logins", "-n", "30", "-c", "10")
    assert record["results"]["ok"] == 30 and record["results"]["errors"] == 0


def test_throughput_accounts_for_every_message(stub: int, tmp_path: Path) -> None:
    record = _run(stub, tmp_path, "throughput", "--pairs", "4", "--duration", "0.5", "--warmup", "0.2")
    res = record["results"]
    assert res["lost"] == 0 and res["sent"] == res["received"] > 0 and res["delivered"] > 0


def test_throughput_two_processes(stub: int, tmp_path: Path) -> None:
    record = _run(stub, tmp_path, "--procs", "2", "throughput", "--pairs", "4", "--duration", "0.3",
                  "--warmup", "0.1")
    assert record["results"]["lost"] == 0 and record["results"]["received"] > 0


def test_latency(stub: int, tmp_path: Path) -> None:
    record = _run(stub, tmp_path, "latency", "--pairs", "3", "--rate", "500", "--duration", "0.6",
                  "--warmup", "0.2")
    res = record["results"]
    assert res["lost"] == 0 and res["samples"] > 100 and 0 < res["p50_ms"] <= res["max_ms"]


def test_memory_finds_server_by_port(stub: int, tmp_path: Path) -> None:
    record = _run(stub, tmp_path, "memory", "-n", "20", "--settle", "0.1")
    assert record["results"]["sessions"] == 20 and record["results"]["server_pid"] > 0


def test_ceiling_flag(stub: int, tmp_path: Path) -> None:
    first = _run(stub, tmp_path, "logins", "-n", "10", "-c", "5")
    rc = load.main(["--port", str(stub), "--target", "other", "--json", str(tmp_path / "b.jsonl"),
                    "--ceiling", str(tmp_path / "runs.jsonl"), "logins", "-n", "10", "-c", "5"])
    assert rc == 0
    record = json.loads((tmp_path / "b.jsonl").read_text())
    assert record["ceiling"]["logins_per_s"] == first["results"]["logins_per_s"]
    assert isinstance(record["generator_bound"], bool)


@pytest.mark.parametrize("mechs", ["SCRAM-SHA-1", "PLAIN"])
def test_mechanism_fallback(tmp_path: Path, mechs: str) -> None:
    proc, port = _start_stub("--mechanisms", mechs)
    try:
        record = _run(port, tmp_path, "logins", "-n", "5", "-c", "5")
        assert record["results"]["ok"] == 5
    finally:
        proc.terminate()
        proc.wait(10)


def test_wrong_password_is_an_error(stub: int, tmp_path: Path) -> None:
    rc = load.main(["--port", str(stub), "--password", "wrong", "logins", "-n", "3", "-c", "3"])
    assert rc == 1  # the stub signs with its own password: the server signature check fails


def test_scram_sha256_rfc7677_vector() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    client.nonce = "rOprNGfwEbeRWgbNEkqO"
    client.first_bare = f"n=user,r={client.nonce}"
    server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert client.final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert client.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_prosody_account_file_matches_prosodyctl(tmp_path: Path) -> None:
    # Keys of an account made by `prosodyctl adduser` (Prosody 0.12.3, password "secret").
    text = provision.prosody_account("secret", "2cfc4f90-ce98-4f22-a577-9c4eed883917")
    assert '["stored_key"] = "28ca592330ba6c76073b621e6a3c723d4141cdc7";' in text
    assert '["server_key"] = "ed62bd7fa452f70640c210e107daa062e847ec41";' in text
    n = provision.provision_prosody(str(tmp_path), provision.bench_users("u", 3, "example.com"), "pw",
                                    shared_salt=True, owner=None)
    assert n == 3
    assert sorted(os.listdir(tmp_path / "example%2ecom" / "accounts")) == ["u0.dat", "u1.dat", "u2.dat"]


# -- feature workloads (issues 12-14) ----------------------------------------------------------

def test_throughput_sm_carbons_against_stub(stub: int, tmp_path: Path) -> None:
    record = _run(stub, tmp_path, "--carbons", "--features", "sm+carbons", "throughput", "--sm",
                  "--sm-every", "4", "--pairs", "3", "--duration", "0.4", "--warmup", "0.1")
    res = record["results"]
    assert res["lost"] == 0 and res["received"] > 0
    assert record["params"]["sm"] is True and record["params"]["features"] == "sm+carbons"


def test_resume_against_stub(stub: int, tmp_path: Path) -> None:
    record = _run(stub, tmp_path, "resume", "-n", "8", "--cycles", "2", "--settle", "0.05")
    res = record["results"]
    assert res["ok"] == 16 and res["errors"] == 0 and res["resumptions_per_s"] > 0
    assert res["rss_detached_kib"] > 0  # the stub found by its port


XMPPD_USERS = 24


@pytest.fixture(scope="module")
def xmppd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An in-process xmppd with the default modules plus mam, benchmark limits, accounts
    user0..user23 (password "bench")."""
    pytest.importorskip("xmppd")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from support import ServerThread

    from xmppd.core.config import Limits

    modules = ("disco", "ping", "message", "roster", "presence", "offline", "sm", "carbons", "muc", "pep",
               "pubsub", "mam")
    srv = ServerThread(tmp_path_factory.mktemp("xmppd"), {f"user{i}": "bench" for i in range(XMPPD_USERS)},
                       {"require_encryption": False, "allow_plain": True, "modules_enabled": modules,
                        "limits": Limits(rate_limit_bytes_per_s=0, max_preauth_connections_per_ip=10000,
                                         auth_failed_usernames_per_ip_per_min=10000),
                        "modules_options": {"muc": {"message_rate": 0, "max_rooms_per_user": 0}}})
    srv.start()
    yield srv.port
    srv.stop()


def _xrun(port: int, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "x.jsonl"
    rc = load.main(["--port", str(port), "--target", "xmppd", "--json", str(out), *args])
    record = json.loads(out.read_text().splitlines()[-1])
    assert rc == 0, record
    return record


def test_xmppd_throughput_sm_with_archive(xmppd: int, tmp_path: Path) -> None:
    # Regression: a client <r/> while archive writes were pending closed the stream.
    record = _xrun(xmppd, tmp_path, "--carbons", "throughput", "--sm", "--sm-every", "2", "--pairs", "2",
                   "--duration", "0.4", "--warmup", "0.1")
    assert record["results"]["lost"] == 0 and record["results"]["received"] > 0


def test_xmppd_mam_page(xmppd: int, tmp_path: Path) -> None:
    record = _xrun(xmppd, tmp_path, "mam-page", "--fill", "120", "--owner", "10", "--fill-from", "11",
                   "--clients", "2", "--page", "50", "--duration", "0.4", "--warmup", "0.1")
    res = record["results"]
    assert res["queries"] > 0 and res["errors"] == 0 and res["p50_ms"] > 0 and res["items_per_s"] > 0


def test_xmppd_resume(xmppd: int, tmp_path: Path) -> None:
    record = _xrun(xmppd, tmp_path, "resume", "-n", "4", "--cycles", "2", "--settle", "0.05")
    assert record["results"]["ok"] == 8 and record["results"]["errors"] == 0


def test_xmppd_fanout(xmppd: int, tmp_path: Path) -> None:
    record = _xrun(xmppd, tmp_path, "fanout", "--subscribers", "6", "--duration", "0.4", "--warmup", "0.1")
    res = record["results"]
    assert res["lost"] == 0 and res["notifications_per_s"] > 0 and res["publish_p50_ms"] > 0


def test_xmppd_pep_presence(xmppd: int, tmp_path: Path) -> None:
    record = _xrun(xmppd, tmp_path, "pep-presence", "-n", "5", "--nodes", "2", "--updates", "2",
                   "--settle", "0.05")
    res = record["results"]
    assert res["pongs"] == 5 and res["presences"] == 10 and res["cpu_us_per_presence"] is not None


def test_xmppd_muc(xmppd: int, tmp_path: Path) -> None:
    record = _xrun(xmppd, tmp_path, "muc", "--occupants", "6", "--talkers", "2", "--rooms", "2",
                   "--duration", "0.4", "--warmup", "0.1")
    res = record["results"]
    assert res["lost"] == 0 and res["msgs_per_s"] > 0 and res["p99_ms"] > 0


def test_xmppd_muc_join(xmppd: int, tmp_path: Path) -> None:
    record = _xrun(xmppd, tmp_path, "muc-join", "--occupants", "10")
    assert record["results"]["ok"] == 10 and record["results"]["joins_per_s"] > 0


def test_fill_archive(tmp_path: Path) -> None:
    pytest.importorskip("xmppd")
    import asyncio

    import fill_archive

    from xmppd.core.config import load as load_config
    from xmppd.storage import open_storage

    cfg = tmp_path / "x.toml"
    cfg.write_text(f'[server]\ndomains = ["localhost"]\ndata_dir = "{tmp_path / "data"}"\n')
    assert fill_archive.main(["--config", str(cfg), "-n", "250", "--batch", "100"]) == 0

    async def count() -> int:
        storage = await open_storage(load_config(str(cfg)).storage_url)
        try:
            return await storage.open_store("mam", "archive").count("user0@localhost")
        finally:
            await storage.close()

    assert asyncio.run(count()) == 250


def test_summary_rows_per_feature_set() -> None:
    from loadgen.summary import summarize

    def rec(target: str, features: str, value: float) -> dict:
        return {"target": target, "workload": "throughput", "results": {"msgs_per_s": value, "lost": 0},
                "params": {"pairs": 5, "window": 16, "tls": False, "features": features}}

    text = summarize([rec("prosody", "plain", 10.0), rec("xmppd", "plain", 20.0),
                      rec("prosody", "sm+carbons+mam", 5.0), rec("xmppd", "sm+carbons+mam", 20.0)])
    assert "features=plain" in text and "features=sm+carbons+mam" in text
    assert "2.00x" in text and "4.00x" in text


def test_resume_two_processes(stub: int, tmp_path: Path) -> None:
    record = _run(stub, tmp_path, "--procs", "2", "resume", "-n", "6", "--cycles", "2", "--settle", "0.05")
    assert record["results"]["ok"] == 12 and record["params"]["procs"] == 2


def test_throughput_over_websocket_against_xmppd(make_server, tmp_path: Path) -> None:
    """The ws-throughput workload: the generator's WebSocket carrier against a real server."""
    users = {f"user{i}": "bench" for i in range(4)}
    srv = make_server(users=users, require_encryption=False)
    out = tmp_path / "runs.jsonl"
    rc = load.main(["--port", str(srv.http_port), "--websocket", "/xmpp-websocket", "--target",
                    "xmppd", "--json", str(out), "throughput", "--pairs", "2", "--duration", "0.5",
                    "--warmup", "0.2"])
    record = json.loads(out.read_text().splitlines()[-1])
    assert rc == 0, record
    res = record["results"]
    assert res["delivered"] > 0 and res["lost"] == 0 and res["sent"] == res["received"]
    assert record["params"]["websocket"] == "/xmpp-websocket"


def test_bosh_body_parts_and_qualified() -> None:
    from loadgen.bosh import body_parts, qualified

    attrs, inner = body_parts(b"<body sid='s1' wait=\"60\" xmlns='http://jabber.org/protocol/httpbind'>"
                              b"<message xmlns='jabber:client'><body>hi</body></message></body>")
    assert attrs["sid"] == "s1" and attrs["wait"] == "60"
    assert inner == b"<message xmlns='jabber:client'><body>hi</body></message>"
    assert body_parts(b"<body type='terminate' condition='item-not-found'/>") == (
        {"type": "terminate", "condition": "item-not-found"}, b"")
    assert qualified(b"<presence/><iq type='set' id='b'/><message to='a@b'><body/></message>"
                     b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><iq xmlns='jabber:client'/>") == (
        b"<presence xmlns='jabber:client'/><iq xmlns='jabber:client' type='set' id='b'/>"
        b"<message xmlns='jabber:client' to='a@b'><body/></message>"
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><iq xmlns='jabber:client'/>")


def test_upload_slot_parsing() -> None:
    from loadgen.upload import parse_slot

    # Prosody 0.12 (mod_http_file_share): a bearer token in a header of <put>
    prosody = ("<iq type='result' id='slot0' from='upload.localhost'><slot xmlns='urn:xmpp:http:upload:0'>"
               "<get url='http://upload.localhost:15280/file_share/abc/f.bin'/>"
               "<put url='http://upload.localhost:15280/file_share/abc/f.bin'>"
               "<header name='Authorization'>Bearer x.y&amp;z</header></put></slot></iq>")
    assert parse_slot(prosody) == ("http://upload.localhost:15280/file_share/abc/f.bin",
                                   {"Authorization": "Bearer x.y&z"},
                                   "http://upload.localhost:15280/file_share/abc/f.bin")
    # xmppd: a signed PUT URL (the query's & escaped), no headers
    xmppd = ('<iq type="result"><slot xmlns="urn:xmpp:http:upload:0"><put url="https://h:1/upload/s/f?v=1&amp;'
             'e=2"/><get url="https://h:1/upload/s/f"/></slot></iq>')
    assert parse_slot(xmppd) == ("https://h:1/upload/s/f?v=1&e=2", {}, "https://h:1/upload/s/f")


def test_bosh_against_xmppd(make_server, tmp_path: Path) -> None:
    """The bosh workload: sessions held over BOSH, then the closed loop between BOSH clients."""
    srv = make_server(users={f"user{i}": "bench" for i in range(6)}, require_encryption=False)
    out = tmp_path / "runs.jsonl"
    base = ["--port", str(srv.http_port), "--bosh", "/http-bind", "--target", "xmppd", "--json", str(out)]
    assert load.main([*base, "memory", "-n", "6", "--settle", "0.1"]) == 0
    record = json.loads(out.read_text().splitlines()[-1])
    assert record["results"]["sessions"] == 6 and record["results"]["held"] == 6
    assert record["params"]["bosh"] == "/http-bind"
    assert load.main([*base, "throughput", "--pairs", "2", "--duration", "0.5", "--warmup", "0.2"]) == 0
    res = json.loads(out.read_text().splitlines()[-1])["results"]
    assert res["delivered"] > 0 and res["lost"] == 0 and res["sent"] == res["received"]
    assert 0 < res["http_requests_per_msg"]


def test_upload_against_xmppd(make_server, tmp_path: Path) -> None:
    """The upload workload: slot over c2s, PUT and GET (here over the HTTPS listener)."""
    srv = make_server(users={"user0": "bench"}, require_encryption=False, allow_plain=True)
    out = tmp_path / "runs.jsonl"
    rc = load.main(["--port", str(srv.port), "--target", "xmppd", "--json", str(out),
                    "upload", "--size-mb", "1", "--rounds", "2"])
    record = json.loads(out.read_text().splitlines()[-1])
    assert rc == 0, record
    res = record["results"]
    assert res["rounds"] == 2 and res["errors"] == 0 and res["put_mb_per_s"] > 0 and res["get_mb_per_s"] > 0
    assert res["rss_growth_kib"] is not None


def test_summary_rows_bosh_and_upload() -> None:
    from loadgen.summary import summarize

    def rec(target: str, workload: str, params: dict, results: dict) -> dict:
        return {"target": target, "workload": workload, "params": params, "results": results}

    tcp = {"sessions": 10, "tls": False}
    bosh = {**tcp, "bosh": "/http-bind"}
    text = summarize([rec("prosody", "memory", tcp, {"bytes_per_session": 100.0}),
                      rec("prosody", "memory", bosh, {"bytes_per_session": 400.0, "held": 10}),
                      rec("xmppd", "memory", bosh, {"bytes_per_session": 100.0, "held": 10}),
                      rec("prosody", "upload", {"size_mb": 10.0, "rounds": 3},
                          {"put_mb_per_s": 10.0, "get_mb_per_s": 100.0, "rss_growth_kib": 1000}),
                      rec("xmppd", "upload", {"size_mb": 10.0, "rounds": 3},
                          {"put_mb_per_s": 100.0, "get_mb_per_s": 200.0, "rss_growth_kib": 500})])
    assert "bosh=/http-bind" in text and "0.25x" in text  # BOSH row apart from the TCP one
    assert "10.00x" in text and "get_mb_per_s" in text and "rss_growth_kib" in text


def test_logins_report_the_generators_own_ceiling(stub: int, tmp_path: Path) -> None:
    res = _run(stub, tmp_path, "logins", "-n", "40", "-c", "10", "--roster", "--presence")["results"]
    assert res["ok"] == 40 and res["errors"] == 0
    # CPU per login from process times (coarse ticks): present and consistent, never timed
    assert res["generator_cpu_us_per_login"] > 0
    assert res["generator_ceiling_per_s"] * res["generator_cpu_us_per_login"] == pytest.approx(1e6)
    assert "server_cpu_us_per_login" in res  # the stub found by its port


def test_xmppd_logins_with_roster_and_presence(xmppd: int, tmp_path: Path) -> None:
    record = _xrun(xmppd, tmp_path, "logins", "-n", "12", "-c", "4", "--roster", "--presence")
    assert record["results"]["ok"] == 12 and record["results"]["errors"] == 0
    assert record["params"]["roster"] is True


def test_logins_fail_when_the_roster_get_fails(make_server, tmp_path: Path) -> None:
    # Without the roster module the server answers the roster get with an error: --roster
    # really asks, and checks the answer.
    from xmppd.core.config import Limits

    srv = make_server(users={f"user{i}": "bench" for i in range(3)}, require_encryption=False,
                      modules_enabled=("disco", "ping", "message"),
                      limits=Limits(rate_limit_bytes_per_s=0))
    rc = load.main(["--port", str(srv.port), "--json", str(tmp_path / "r.jsonl"),
                    "logins", "-n", "3", "-c", "3", "--roster", "--no-warm"])
    res = json.loads((tmp_path / "r.jsonl").read_text())["results"]
    assert rc == 1 and res["errors"] == 3 and res["ok"] == 0
    assert "roster get failed" in res["error_samples"][0]


def test_login_timeout_from_the_pools_watchdog(tmp_path: Path) -> None:
    # A listener that accepts and never answers: every login must end as a timeout error
    # (one watchdog for the pool, no timer per login), not hang.
    import socket

    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, str(BENCH / "load.py"), "--port", str(port), "--timeout", "1",
             "--json", str(tmp_path / "t.jsonl"), "logins", "-n", "3", "-c", "3", "--no-warm"],
            capture_output=True, text=True, timeout=30,
        )
    finally:
        silent.close()
    res = json.loads((tmp_path / "t.jsonl").read_text())["results"]
    assert proc.returncode == 1 and res["errors"] == 3 and res["ok"] == 0
    assert "login timeout" in res["error_samples"][0]
