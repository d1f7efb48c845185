"""Checks before the server starts, and one-line messages for what an operator must fix.

``xmppd run`` calls :func:`prepare_run` (data directory, the data directory lock,
certificates); ``xmppd check`` calls :func:`check_all`, which also binds the configured
ports for a moment and opens the database read-write.  Every problem is a one-line message
naming the file, port or config key and what to do; :class:`PreflightError` carries one to
the command line, which prints it as ``xmppd: <message>`` and exits with status 1.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import logging
import os
import socket
import sqlite3
import ssl
from pathlib import Path
from typing import Any

from xmppd.core.config import Config, Listener

__all__ = [
    "LOCK_NAME",
    "DataDirLock",
    "PreflightError",
    "certificate_problems",
    "check_all",
    "check_certificate_files",
    "check_data_dir",
    "check_ports",
    "check_storage_writable",
    "describe_error",
    "listen_error",
    "lock_data_dir",
    "lock_holder",
    "planned_listeners",
    "prepare_data_dir",
    "prepare_run",
]

log = logging.getLogger(__name__)

#: The lock file in the data directory: held (flock) by the running server, holds its PID.
LOCK_NAME = "xmppd.lock"

#: The component module's DEFAULT_LISTENER (the core does not import modules).
_COMPONENT_DEFAULT = Listener("127.0.0.1", 5347)

_DATA_DIR_KEY = "server.data_dir or XMPPD_DATA_DIR"


class PreflightError(Exception):
    """Something the operator must fix before xmppd can run; ``str()`` is a one-line message."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - only for a hint in a message
        return str(os.getuid())


# -- the data directory and its lock ------------------------------------------------------------


def prepare_data_dir(config: Config) -> Path:
    """Create the data directory (owner-only) if needed; PreflightError if that fails."""
    path = Path(config.data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise PreflightError(
            f"data directory {path} exists but is not a directory (change {_DATA_DIR_KEY})"
        ) from None
    except OSError as exc:
        raise PreflightError(
            f"cannot create the data directory {path}: {_reason(exc)} "
            f"(set {_DATA_DIR_KEY} to a directory user {_user()} may write)"
        ) from None
    return path


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/xmppd.lock``, held until :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # no stale PID for the next reader (we still hold the lock)
        except OSError:
            pass
        os.close(fd)  # closing the descriptor drops the lock

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _held_message(data_dir: Path, pid: int | None) -> str:
    who = f"PID {pid}" if pid else "a process whose PID is not recorded yet"
    return (
        f"another xmppd ({who}) is already running with the data directory {data_dir} "
        f"(stop it first, or give this server its own {_DATA_DIR_KEY})"
    )


def lock_data_dir(path: str | os.PathLike[str]) -> DataDirLock:
    """Take the data directory's exclusive lock and write our PID into the lock file (0600).

    The lock is the kernel's (flock): it goes away with the process, so a crash leaves no
    stale lock.  Only ``xmppd run`` takes it; the account commands work beside a running
    server (SQLite serializes their writes).
    """
    data_dir = Path(path)
    lock_path = data_dir / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise PreflightError(
            f"cannot create the lock file {lock_path}: {_reason(exc)} "
            f"(the data directory must be writable by user {_user()}; check {_DATA_DIR_KEY})"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise PreflightError(_held_message(data_dir, pid)) from None
    except OSError as exc:
        os.close(fd)
        raise PreflightError(
            f"cannot lock {lock_path}: {_reason(exc)} "
            f"(put {_DATA_DIR_KEY} on a local file system)"
        ) from None
    try:
        with contextlib.suppress(OSError):  # not ours to change: still usable
            os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise PreflightError(f"cannot write the lock file {lock_path}: {_reason(exc)}") from None
    return DataDirLock(lock_path, fd)


def lock_holder(path: str | os.PathLike[str]) -> int | None:
    """The PID of the xmppd holding the data directory's lock (0: PID unknown), else None."""
    try:
        fd = os.open(Path(path) / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no server has run here (or we cannot tell)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        except OSError:
            return None
        return None
    finally:
        os.close(fd)  # also drops our shared lock at once


def _data_dir_problem(path: Path) -> str | None:
    """Why the data directory is unusable, without creating it; None if it is usable."""
    if path.exists():
        if not path.is_dir():
            return f"data directory {path} is not a directory (change {_DATA_DIR_KEY})"
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            return (f"data directory {path} is not writable by user {_user()} "
                    f"(fix its owner and permissions, or change {_DATA_DIR_KEY})")
        return None
    error = _probe_create(path, directory=True)
    if error:
        return f"data directory {path} cannot be created: {error} (change {_DATA_DIR_KEY})"
    return None


def check_data_dir(config: Config) -> list[str]:
    """Problems with the data directory, a running server on it included (for ``check``)."""
    path = Path(config.data_dir)
    problem = _data_dir_problem(path)
    if problem:
        return [problem]
    pid = lock_holder(path)
    return [] if pid is None else [_held_message(path, pid)]


def _probe_create(path: Path, *, directory: bool) -> str | None:
    """Why ``path`` (absent) could not be created, found by creating and removing its first
    missing component; None if it can be."""
    first = path
    while not first.parent.exists() and first.parent != first.parent.parent:
        first = first.parent
    try:
        if directory or first != path:
            os.mkdir(first, 0o700)
            os.rmdir(first)
        else:
            os.close(os.open(first, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(first)
    except OSError as exc:
        name = os.fsdecode(exc.filename or first)
        return _reason(exc) if name == str(path) else f"{name}: {_reason(exc)}"
    return None


# -- certificates -------------------------------------------------------------------------------


def _generated_later(config: Config, domain: str) -> bool:
    """True if ``run`` generates this domain's self-signed certificate (pair incomplete)."""
    cert = config.certificate_for(domain)
    return domain not in config.certificates and not (cert.cert.exists() and cert.key.exists())


def _read_file(path: Path, what: str, fix: str) -> tuple[bytes | None, str | None]:
    if not path.exists():
        return None, f"{what} file {path} is missing ({fix})"
    if not path.is_file():
        return None, f"{what} file {path} is not a regular file ({fix})"
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return None, (
            f"cannot read {what} file {path}: {_reason(exc)} "
            f"(check its owner and permissions: xmppd runs as user {_user()})"
        )


def _certificate_errors(config: Config, domain: str) -> list[str]:
    """What keeps TLS from using this domain's certificate and key (empty: usable)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    pair = config.certificate_for(domain)
    if domain in config.certificates:
        key_name = f'certificates."{domain}"'
        fix_cert, fix_key = f"fix {key_name}.cert", f"fix {key_name}.key"
        fix_pair = f"fix {key_name}"
    else:
        fix_pair = fix_cert = fix_key = (
            f"delete {pair.cert} and {pair.key} to have a new self-signed pair generated, "
            f"or configure certificates.\"{domain}\""
        )
    errors = []
    cert = key = None
    data, error = _read_file(pair.cert, "certificate", fix_cert)
    if error:
        errors.append(error)
    else:
        try:
            cert = x509.load_pem_x509_certificates(data)[0]
        except (ValueError, IndexError):
            errors.append(f"certificate file {pair.cert} is not a PEM certificate ({fix_cert})")
    data, error = _read_file(pair.key, "key", fix_key)
    if error:
        errors.append(error)
    else:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            errors.append(
                f"key file {pair.key} is not an unencrypted PEM private key ({fix_key})"
            )
    if cert is None or key is None:
        return [f"{domain}: {e}" for e in errors]
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
        return [
            f"{domain}: private key does not match the certificate "
            f"(key {pair.key}, certificate {pair.cert}; {fix_pair})"
        ]
    try:  # what the server will do with them
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(pair.cert, pair.key)
    except (ssl.SSLError, OSError) as exc:
        return [
            f"{domain}: TLS cannot use certificate {pair.cert} with key {pair.key}: "
            f"{getattr(exc, 'reason', None) or _reason(exc)} ({fix_pair})"
        ]
    return []


def certificate_problems(config: Config) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for the domains' certificates.

    Errors stop the server (missing, unreadable or not PEM, key not matching); warnings
    (expired, not covering the domain, key readable by others) are logged at start.  A
    domain whose self-signed pair is not there yet is skipped: ``run`` generates it.
    """
    from xmppd.transport.tls import check_certificate

    errors: list[str] = []
    warnings: list[str] = []
    for domain in config.domains:
        if _generated_later(config, domain):
            continue
        found = _certificate_errors(config, domain)
        if found:
            errors += found
        else:
            pair = config.certificate_for(domain)
            warnings += [f"{domain}: {p}" for p in check_certificate(pair.cert, pair.key, domain)]
    return errors, warnings


def check_certificate_files(config: Config) -> list[str]:
    """Every certificate problem, errors and warnings alike (for ``xmppd check``)."""
    errors, warnings = certificate_problems(config)
    return errors + warnings


# -- ports ---------------------------------------------------------------------------------------


def planned_listeners(config: Config) -> list[tuple[str, Listener]]:
    """``(config key, listener)`` for every port ``run`` opens."""
    out = [("c2s.direct_tls" if lst.direct_tls else "c2s.listen", lst) for lst in config.c2s]
    out += [("http.listen_tls" if lst.direct_tls else "http.listen", lst) for lst in config.http]
    if "s2s" not in config.modules_disabled:
        out += [("s2s.direct_tls" if lst.direct_tls else "s2s.listen", lst) for lst in config.s2s]
    if config.components and "component" not in config.modules_disabled:
        out += [("components.listen", lst)
                for lst in config.component_listeners or (_COMPONENT_DEFAULT,)]
    return out


def _address(listener: Listener) -> str:
    host = f"[{listener.host}]" if ":" in listener.host else listener.host
    return f"{host}:{listener.port}"


def _bind_message(key: str, listener: Listener, exc: OSError) -> str:
    where = f"{key} {_address(listener)}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is already in use (another server running? change {key})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{where}: permission denied (ports below 1024 need root or "
                f"CAP_NET_BIND_SERVICE; change {key})")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: this machine has no such address (change {key})"
    if isinstance(exc, socket.gaierror):
        return f"{where}: unknown host {listener.host!r} (change {key})"
    return f"{where}: {_reason(exc)} (change {key})"


_KIND_KEYS = {"s2s": "s2s.listen", "s2s-tls": "s2s.direct_tls", "component": "components.listen"}


def listen_error(kind: str, listener: Listener, exc: OSError) -> PreflightError:
    """The error for a listener of ``Server.listen(kind, ...)`` that could not be opened."""
    if kind == "c2s":
        key = "c2s.direct_tls" if listener.direct_tls else "c2s.listen"
    elif kind == "http":
        key = "http.listen_tls" if listener.direct_tls else "http.listen"
    else:
        key = _KIND_KEYS.get(kind, f"the {kind} listener")
    return PreflightError(_bind_message(key, listener, exc))


def check_ports(config: Config) -> list[str]:
    """Bind (and listen on) every configured port, then release them all at once.

    Sockets are set up as asyncio's ``create_server`` does (SO_REUSEADDR, IPv6-only for
    IPv6), and all are held until the end, so a port configured twice is found too.
    """
    problems: list[str] = []
    held: list[socket.socket] = []
    try:
        for key, listener in planned_listeners(config):
            try:
                infos = socket.getaddrinfo(listener.host or None, listener.port,
                                           type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            except socket.gaierror as exc:
                problems.append(_bind_message(key, listener, exc))
                continue
            for family, kind, proto, _name, sockaddr in infos:
                try:
                    sock = socket.socket(family, kind, proto)
                except OSError:
                    continue  # e.g. no IPv6 here; asyncio skips such families too
                held.append(sock)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(sockaddr)
                    sock.listen(1)
                except OSError as exc:
                    problems.append(_bind_message(key, listener, exc))
                    break
    finally:
        for sock in held:
            sock.close()
    return problems


# -- storage ------------------------------------------------------------------------------------


def _storage(config: Config) -> Any:
    from xmppd.storage import storage_from_spec

    try:
        return storage_from_spec(config.storage_url)
    except ValueError as exc:
        raise PreflightError(f"server.storage: {exc}") from None


def check_storage_writable(config: Config) -> list[str]:
    """Open the SQLite database read-write (no schema change), or see that it can be made."""
    from xmppd.storage import SQLiteStorage

    try:
        storage = _storage(config)
    except PreflightError as exc:
        return [str(exc)]
    if not isinstance(storage, SQLiteStorage):
        return _postgresql_problems(storage)
    path = Path(storage.path)
    fix = "check server.storage or server.data_dir, and the file's owner and permissions"
    if not path.exists():
        error = _probe_create(path, directory=False)
        return [f"database {path} cannot be created: {error} ({fix})"] if error else []
    if not path.is_file():
        return [f"database {path} is not a regular file ({fix})"]
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return [f"database {path} cannot be opened read-write: {exc} ({fix})"]
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the header
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock, changes nothing
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return [f"database {path} cannot be opened read-write: {exc} ({fix})"]
    finally:
        conn.close()
    return []


def _postgresql_problems(storage: Any) -> list[str]:
    """A PostgreSQL URL's shape was checked when it was parsed; whether the server can be
    reached is seen at start (it may be down now and up then): only asyncpg is needed here."""
    from xmppd.storage import PostgreSQLStorage

    if not isinstance(storage, PostgreSQLStorage):
        return []
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return ["server.storage: PostgreSQL storage needs asyncpg: pip install 'xmppd[postgresql]'"]
    return []


# -- the commands ---------------------------------------------------------------------------------


def prepare_run(config: Config) -> DataDirLock:
    """Before ``xmppd run`` starts: storage spec, data directory, its lock, certificates.

    Returns the held lock (release it at exit).  Certificate warnings are logged.
    """
    _storage(config)
    data_dir = prepare_data_dir(config)
    lock = lock_data_dir(data_dir)
    try:
        errors, warnings = certificate_problems(config)
        if errors:
            raise PreflightError("; ".join(errors))
    except BaseException:
        lock.release()
        raise
    for warning in warnings:
        log.warning("certificate for %s", warning)
    return lock


def federation_warnings(config: Config) -> list[str]:
    """Federation set-ups that start but cannot work in one direction."""
    if "s2s" in config.modules_disabled or not config.s2s_dialback or config.s2s:
        return []
    if config.modules_enabled is not None and "s2s" not in config.modules_enabled:
        return []
    return ["warning: s2s: dialback is enabled but there is no [s2s] listen address: remote"
            " servers verify our dialback keys by connecting back to us, so outbound federation"
            " only works with peers that accept our certificate (set [s2s] listen, or"
            " dialback = false)"]


def check_all(config: Config, warnings: list[str] | None = None) -> list[str]:
    """Every problem ``xmppd check`` reports, one line each (``warnings``, if given,
    receives what is worth saying but does not stop the server)."""
    if warnings is not None:
        warnings += federation_warnings(config)
    problems = check_data_dir(config)
    data_dir_broken = _data_dir_problem(Path(config.data_dir)) is not None
    problems += check_certificate_files(config)
    problems += check_ports(config)
    if not (data_dir_broken and not config.storage):  # else the database is in it: said already
        problems += check_storage_writable(config)
    return problems


def describe_error(exc: BaseException) -> str:
    """A one-line message for an OSError or StorageError that ended a command."""
    if isinstance(exc, ssl.SSLError):
        text = f"TLS error: {exc.reason or exc} (run 'xmppd check' to see which file)"
    elif isinstance(exc, OSError) and exc.filename is not None:
        hint = {
            errno.EACCES: f"check its owner and permissions: xmppd runs as user {_user()}",
            errno.EPERM: f"check its owner and permissions: xmppd runs as user {_user()}",
            errno.ENOENT: "check the path in the configuration",
            errno.ENOSPC: "the disk is full",
            errno.EROFS: "the file system is read-only",
            errno.EEXIST: "a file is where a directory should be: check the configured paths",
            errno.ENOTDIR: "a file is where a directory should be: check the configured paths",
        }.get(exc.errno or 0, "")
        text = f"{os.fsdecode(exc.filename)}: {_reason(exc)}" + (f" ({hint})" if hint else "")
    elif isinstance(exc, OSError):
        text = _reason(exc) if exc.errno else str(exc)
    else:  # StorageError: it names the database file
        text = f"storage: {exc} (check server.storage or server.data_dir)"
    return _one_line(text)
