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
