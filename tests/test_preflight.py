"""Operators never see a traceback: ``xmppd run``, ``check`` and the account commands end
with one ``xmppd: ...`` line naming the file, port or config key (issue 11, items 7 and 8),
and one data directory serves one server at a time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_cli import RunningServer, _write_cert, _write_key, free_port, write_config, xmppd_cmd

from xmppd import cli, preflight
from xmppd.core.config import Certificate, Config, Listener
from xmppd.preflight import PreflightError, check_ports, lock_data_dir, lock_holder
from xmppd.storage import storage_from_spec

CERTS = '[certificates."localhost"]\ncert = "c.crt"\nkey = "c.key"\n'


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single ``xmppd: ...`` line a failed command printed (and nothing else)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmppd: "), result.stderr
    assert "//" not in lines[0]
    return lines[0]


def busy_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


# -- certificates -------------------------------------------------------------------------------


def test_missing_certificate_file(tmp_path):
    config = write_config(tmp_path, '[certificates."localhost"]\ncert = "nope.crt"\nkey = "c.key"\n')
    _write_key(tmp_path / "c.key", ec.generate_private_key(ec.SECP256R1()))
    line = one_line_error(xmppd_cmd("run", config=config))
    assert line == (f"xmppd: localhost: certificate file {tmp_path / 'nope.crt'} is missing "
                    '(fix certificates."localhost".cert)')
    check = xmppd_cmd("check", config=config)
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert f"certificate file {tmp_path / 'nope.crt'} is missing" in check.stdout


@pytest.mark.parametrize("broken", ["cert", "key"])
def test_certificate_or_key_not_pem(tmp_path, broken):
    key = ec.generate_private_key(ec.SECP256R1())
    _write_cert(tmp_path / "c.crt", key, days=(-1, 30))
    _write_key(tmp_path / "c.key", key)
    (tmp_path / ("c.crt" if broken == "cert" else "c.key")).write_text("not PEM at all\n")
    config = write_config(tmp_path, CERTS)
    line = one_line_error(xmppd_cmd("run", config=config))
    if broken == "cert":
        expected = (f"certificate file {tmp_path / 'c.crt'} is not a PEM certificate "
                    '(fix certificates."localhost".cert)')
    else:
        expected = (f"key file {tmp_path / 'c.key'} is not an unencrypted PEM private key "
                    '(fix certificates."localhost".key)')
    assert line == f"xmppd: localhost: {expected}"
    check = xmppd_cmd("check", config=config)
    assert check.returncode == 1 and expected in check.stdout


def test_key_not_matching_the_certificate(tmp_path):
    _write_cert(tmp_path / "c.crt", ec.generate_private_key(ec.SECP256R1()), days=(-1, 30))
    _write_key(tmp_path / "c.key", ec.generate_private_key(ec.SECP256R1()))
    config = write_config(tmp_path, CERTS)
    line = one_line_error(xmppd_cmd("run", config=config))
    assert "localhost: private key does not match the certificate" in line
    assert str(tmp_path / "c.key") in line and str(tmp_path / "c.crt") in line


def test_generated_certificate_broken(tmp_path):
    certs = tmp_path / "data" / "certs"
    certs.mkdir(parents=True)
    (certs / "localhost.crt").write_text("garbage\n")
    _write_key(certs / "localhost.key", ec.generate_private_key(ec.SECP256R1()))
    line = one_line_error(xmppd_cmd("run", config=write_config(tmp_path)))
    assert f"certificate file {certs / 'localhost.crt'} is not a PEM certificate" in line
    assert "to have a new self-signed pair generated" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_certificate(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    _write_cert(tmp_path / "c.crt", key, days=(-1, 30))
    _write_key(tmp_path / "c.key", key)
    (tmp_path / "c.crt").chmod(0)
    line = one_line_error(xmppd_cmd("run", config=write_config(tmp_path, CERTS)))
    assert f"cannot read certificate file {tmp_path / 'c.crt'}: Permission denied" in line


def test_certificate_not_covering_the_domain_is_a_warning_at_start(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    _write_cert(tmp_path / "c.crt", key, days=(-1, 30), name="example.org")
    _write_key(tmp_path / "c.key", key)
    port = free_port()
    config = write_config(tmp_path, CERTS, port=port)
    server = RunningServer(config, port)  # it starts...
    server.proc.send_signal(signal.SIGTERM)
    _out, err = server.proc.communicate(timeout=15)
    assert server.proc.returncode == 0
    # ... and says so (log_level is "warning" in these configs)
    assert "WARNING" in err and "certificate for localhost: certificate does not cover " \
        "localhost (names: example.org)" in err
    check = xmppd_cmd("check", config=config)
    assert check.returncode == 1 and "does not cover localhost" in check.stdout


# -- ports -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["c2s.listen", "c2s.direct_tls", "s2s.listen", "s2s.direct_tls",
                                 "components.listen", "http.listen", "http.listen_tls"])
def test_port_in_use(tmp_path, key):
    busy = busy_socket()
    port = busy.getsockname()[1]
    try:
        table, name = key.split(".")
        if table == "c2s":
            config = write_config(tmp_path, **{"port" if name == "listen" else "tls_port": port})
        else:
            extra = '[components."gw.localhost"]\nsecret = "s"\n' if table == "components" else ""
            if table == "http":  # the other HTTP listener off: its default port may be taken
                other = "listen_tls" if name == "listen" else "listen"
                extra += f"{other} = []\n"
            config = write_config(tmp_path, f'[{table}]\n{name} = ["127.0.0.1:{port}"]\n{extra}')
        message = (f"{key} 127.0.0.1:{port} is already in use "
                   f"(another server running? change {key})")
        assert one_line_error(xmppd_cmd("run", config=config)) == f"xmppd: {message}"
        check = xmppd_cmd("check", config=config)
        assert check.returncode == 1 and message in check.stdout.splitlines()
    finally:
        busy.close()


def test_check_ports_finds_a_port_configured_twice():
    port = free_port()
    config = Config(c2s=(Listener("127.0.0.1", port), Listener("127.0.0.1", port, True)),
                    http=())
    assert check_ports(config) == [
        f"c2s.direct_tls 127.0.0.1:{port} is already in use "
        "(another server running? change c2s.direct_tls)"
    ]
    assert check_ports(Config(c2s=(Listener("127.0.0.1", port),), http=())) == []  # released again


def test_component_default_listener_is_the_modules():
    from xmppd.modules.component import DEFAULT_LISTENER

    assert preflight._COMPONENT_DEFAULT == DEFAULT_LISTENER


# -- the data directory and the database -------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "adduser", "passwd", "deluser"])
def test_data_dir_is_a_file(tmp_path, command):
    (tmp_path / "data").write_text("")
    args = () if command == "run" else ("alice@localhost",)
    line = one_line_error(xmppd_cmd(command, *args, config=write_config(tmp_path), input="pw\n"))
    assert line == (f"xmppd: data directory {tmp_path / 'data'} exists but is not a directory "
                    "(change server.data_dir or XMPPD_DATA_DIR)")
    check = xmppd_cmd("check", config=write_config(tmp_path))
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert f"data directory {tmp_path / 'data'} is not a directory" in check.stdout


def test_data_dir_cannot_be_created(tmp_path):
    (tmp_path / "afile").write_text("")
    data_dir = tmp_path / "afile" / "data"
    line = one_line_error(xmppd_cmd("adduser", "alice@localhost", data_dir=data_dir,
                                    input="pw\n"))
    assert line.startswith(f"xmppd: cannot create the data directory {data_dir}: Not a directory")
    assert "server.data_dir or XMPPD_DATA_DIR" in line
    assert one_line_error(xmppd_cmd("run", data_dir=data_dir)) == line
    check = xmppd_cmd("check", data_dir=data_dir)
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert f"data directory {data_dir} cannot be created" in check.stdout
    assert not data_dir.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes directories whatever their mode")
def test_data_dir_not_writable(tmp_path):
    (tmp_path / "data").mkdir(mode=0o500)
    line = one_line_error(xmppd_cmd("run", config=write_config(tmp_path)))
    assert f"cannot create the lock file {tmp_path / 'data' / 'xmppd.lock'}" in line
    assert "Permission denied" in line


def test_database_not_a_database(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "xmppd.sqlite3").write_text("this is no SQLite file\n" * 100)
    config = write_config(tmp_path)
    expected = (f"xmppd: storage: {tmp_path / 'data' / 'xmppd.sqlite3'}: file is not a database "
                "(check server.storage or server.data_dir)")
    assert one_line_error(xmppd_cmd("adduser", "alice@localhost", config=config,
                                    input="pw\n")) == expected
    assert one_line_error(xmppd_cmd("run", config=config)) == expected
    check = xmppd_cmd("check", config=config)
    assert check.returncode == 1
    assert f"database {tmp_path / 'data' / 'xmppd.sqlite3'} cannot be opened read-write: " \
        "file is not a database" in check.stdout


def test_bad_storage_url(tmp_path):
    config = write_config(tmp_path, "").read_text().replace(
        'log_level', 'storage = "mysql://db/x"\nlog_level')
    (tmp_path / "xmppd.toml").write_text(config)
    line = one_line_error(xmppd_cmd("run", config=tmp_path / "xmppd.toml"))
    assert line == "xmppd: server.storage: unknown storage scheme 'mysql'"


def test_sqlite_url_with_four_slashes_has_no_doubled_slash():
    assert str(storage_from_spec("sqlite:////var/lib/x.db").path) == "/var/lib/x.db"
    assert str(storage_from_spec(Config(data_dir=Path("/srv/x")).storage_url).path) == \
        "/srv/x/xmppd.sqlite3"


# -- one server per data directory ----------------------------------------------------------------


def test_second_server_on_the_same_data_dir_is_refused(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port=port)
    server = RunningServer(config, port)
    try:
        lock = tmp_path / "data" / "xmppd.lock"
        assert lock.read_text() == f"{server.proc.pid}\n"
        assert lock.stat().st_mode & 0o777 == 0o600
        # other ports, same data directory
        (tmp_path / "other").mkdir()
        second = write_config(tmp_path / "other")
        second.write_text(second.read_text().replace(
            'data_dir = "data"', f'data_dir = "{tmp_path / "data"}"'))
        line = one_line_error(xmppd_cmd("run", config=second))
        assert line == (f"xmppd: another xmppd (PID {server.proc.pid}) is already running with "
                        f"the data directory {tmp_path / 'data'} (stop it first, or give this "
                        "server its own server.data_dir or XMPPD_DATA_DIR)")
        check = xmppd_cmd("check", config=second)
        assert check.returncode == 1 and f"another xmppd (PID {server.proc.pid})" in check.stdout
        # the account commands are not refused while the server runs
        made = xmppd_cmd("adduser", "alice@localhost", config=config, input="pw\n")
        assert made.returncode == 0, made.stderr
    finally:
        assert server.stop() == 0
    assert (tmp_path / "data" / "xmppd.lock").read_text() == ""
    again = RunningServer(config, port)  # the lock went with the first server
    assert again.stop() == 0


def test_lock_data_dir_in_process(tmp_path):
    with lock_data_dir(tmp_path) as lock:
        assert lock.path == tmp_path / "xmppd.lock"
        assert lock_holder(tmp_path) == os.getpid()
        with pytest.raises(PreflightError, match=rf"another xmppd \(PID {os.getpid()}\)"):
            lock_data_dir(tmp_path)
    assert lock_holder(tmp_path) is None
    lock_data_dir(tmp_path).release()


def test_lock_goes_away_with_a_killed_server(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port=port)
    server = RunningServer(config, port)
    server.proc.kill()
    server.proc.wait(10)
    server.proc.communicate()
    # a stale PID in the file, but no lock: the next start is not refused
    assert (tmp_path / "data" / "xmppd.lock").read_text() == f"{server.proc.pid}\n"
    assert lock_holder(tmp_path / "data") is None
    again = RunningServer(config, port)
    assert again.stop() == 0


# -- real bugs still show their traceback -----------------------------------------------------------


def test_unexpected_exceptions_are_not_swallowed(monkeypatch, tmp_path):
    def broken(config, args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "check", broken)
    monkeypatch.setenv("XMPPD_DATA_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["check"])


def test_check_is_ok_and_creates_nothing(tmp_path):
    config = write_config(tmp_path)
    result = xmppd_cmd("check", config=config)
    assert result.returncode == 0 and "configuration OK" in result.stdout, result.stdout
    assert not (tmp_path / "data").exists()
    assert xmppd_cmd("adduser", "bob@localhost", config=config, input="pw\n").returncode == 0
    result = xmppd_cmd("check", config=config)  # the database opens read-write
    assert result.returncode == 0, result.stdout


# -- permission errors, simulated (the tests run as root, which file modes do not stop) ------------


def _denied(path):
    return PermissionError(13, "Permission denied", str(path))


def test_lock_file_permission_denied(monkeypatch, tmp_path):
    real_open = os.open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("xmppd.lock"):
            raise _denied(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(preflight.os, "open", fake_open)
    with pytest.raises(PreflightError) as info:
        lock_data_dir(tmp_path)
    assert str(info.value).startswith(
        f"cannot create the lock file {tmp_path / 'xmppd.lock'}: Permission denied "
        "(the data directory must be writable by user ")


def test_certificate_permission_denied(monkeypatch, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    _write_cert(tmp_path / "c.crt", key, days=(-1, 30))
    _write_key(tmp_path / "c.key", key)
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "c.crt":
            raise _denied(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    config = Config(data_dir=tmp_path / "data", certificates={"localhost": Certificate(
        tmp_path / "c.crt", tmp_path / "c.key")})
    errors, _warnings = preflight.certificate_problems(config)
    assert errors == [
        f"localhost: cannot read certificate file {tmp_path / 'c.crt'}: Permission denied "
        f"(check its owner and permissions: xmppd runs as user {preflight._user()})"
    ]
    with pytest.raises(PreflightError, match="cannot read certificate file"):
        preflight.prepare_run(config)
    assert lock_holder(tmp_path / "data") is None  # released on the way out


def test_describe_error():
    err = PermissionError(13, "Permission denied", "/var/lib/xmppd/secret")
    assert preflight.describe_error(err).startswith(
        "/var/lib/xmppd/secret: Permission denied (check its owner and permissions")
    assert preflight.describe_error(OSError(28, "No space left on device", "/x")) == \
        "/x: No space left on device (the disk is full)"
