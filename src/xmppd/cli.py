"""The ``xmppd`` command: run the server and administer accounts and certificates."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmppd import __version__
from xmppd.core.config import Config, ConfigError, load

if TYPE_CHECKING:
    from xmppd.storage import Storage
    from xmppd.storage.copy import Progress


def _runner() -> asyncio.Runner:
    """An event-loop runner on uvloop when it is installed, plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _run(coro: Coroutine[Any, Any, int | None]) -> int:
    with _runner() as runner:
        return runner.run(coro) or 0


def _read_password(confirm: bool = True) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != password:
            raise SystemExit("xmppd: the passwords differ")
    if not password:
        raise SystemExit("xmppd: an empty password is not allowed")
    return _check_password(password)


def _check_password(password: str, where: str = "") -> str:
    from xmppd.c2s.sasl import prepare_password

    try:
        prepare_password(password)
    except ValueError as exc:
        raise SystemExit(f"xmppd: {where}{exc}") from None
    return password


def _account(config: Config, text: str) -> tuple[str, str]:
    from xmppd.jid import JID, JIDError

    try:
        jid = JID(text)
    except JIDError as exc:
        raise SystemExit(f"xmppd: {exc}") from None
    if jid.localpart is None or jid.resource is not None:
        raise SystemExit(f"xmppd: {text!r} is not an account address (user@domain)")
    if jid.domain not in config.domains:
        raise SystemExit(
            f"xmppd: {jid.domain} is not a domain of this server ({', '.join(config.domains)})"
        )
    return jid.localpart, jid.domain


async def _with_storage(config: Config, action):
    from xmppd.preflight import prepare_data_dir
    from xmppd.storage import open_storage

    # No data directory lock: account commands are meant to run beside a running server.
    prepare_data_dir(config)
    storage = await open_storage(config.storage_url)
    try:
        return await action(storage)
    finally:
        await storage.close()


def _check_modules(config: Config) -> bool:
    """Validate ``[modules]`` against the modules' declarations; print the error if any."""
    from xmppd.core.manager import plan

    try:
        plan(config)
    except ConfigError as exc:
        print(f"xmppd: configuration error: {exc}", file=sys.stderr)
        return False
    return True


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from xmppd.cluster.membership import cluster_problems
    from xmppd.cluster.supervisor import worker_problems
    from xmppd.preflight import prepare_run
    from xmppd.server import Server

    if not _check_modules(config):  # refuse before anything starts, without a traceback
        return 1
    workers = args.workers if getattr(args, "workers", None) is not None else config.workers
    config = config.replace(workers=workers)
    problems = worker_problems(config, workers) + cluster_problems(config)
    if problems:
        for problem in problems:
            print(f"xmppd: configuration error: {problem}", file=sys.stderr)
        return 1

    path = getattr(args, "config", None)
    config_path = Path(path).resolve() if path else None
    index = getattr(args, "worker", None)
    if index is not None:  # one worker of a supervisor, which holds the data directory lock
        from xmppd.cluster.supervisor import socket_dir

        if not 0 <= index < workers:
            raise SystemExit(f"xmppd: --worker {index} is not below --workers {workers}")
        server = Server(config, config_path, worker=(index, workers, socket_dir(config)))
        return _run(server.run_until_signalled())
    if workers > 1:
        return _supervise(config, workers, str(config_path) if config_path else None)

    async def main() -> None:
        # the file is read again on SIGHUP and `xmppd reload`
        await Server(config, config_path).run_until_signalled()

    with prepare_run(config):  # data directory, its lock (held until exit), certificates
        return _run(main())


def _supervise(config: Config, workers: int, config_path: str | None) -> int:
    from xmppd.cluster.supervisor import Supervisor, prepare_shared
    from xmppd.preflight import prepare_run

    with prepare_run(config):
        prepare_shared(config)
        return _run(Supervisor(workers, config_path).run())


def cmd_adduser(config: Config, args: argparse.Namespace) -> int:
    from xmppd.c2s.sasl import derive_all
    from xmppd.storage import AccountExists

    user, domain = _account(config, args.jid)
    creds = derive_all(_read_password())

    async def action(storage):
        try:
            await storage.create_account(user, domain, creds)
        except AccountExists:
            raise SystemExit(f"xmppd: {user}@{domain} exists already") from None

    _run(_with_storage(config, action))
    print(f"created {user}@{domain}")
    return 0


def _import_lines(stream) -> list[tuple[str, str]]:
    """``jid<TAB>password`` lines; blank lines and ``#`` comments are skipped."""
    out = []
    for number, line in enumerate(stream, 1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        jid, sep, password = line.partition("\t")
        if not sep or not password:
            raise SystemExit(f"xmppd: line {number}: expected 'user@domain<TAB>password'")
        _check_password(password, f"line {number}: ")
        out.append((jid.strip(), password))
    return out


def cmd_import_accounts(config: Config, args: argparse.Namespace) -> int:
    """Create many accounts at once; PBKDF2 runs on every core (one salt per account)."""
    from concurrent.futures import ProcessPoolExecutor

    from xmppd.c2s.sasl import derive_all
    from xmppd.storage import AccountExists

    if args.file == "-":
        entries = _import_lines(sys.stdin)
    else:
        with open(args.file, encoding="utf-8") as fh:
            entries = _import_lines(fh)
    accounts = [_account(config, jid) for jid, _ in entries]
    with ProcessPoolExecutor() as pool:
        creds = list(pool.map(derive_all, [pw for _, pw in entries], chunksize=64))

    async def action(storage):
        async def one(account, cred):
            try:
                await storage.create_account(*account, cred)
            except AccountExists:
                print(f"xmppd: {account[0]}@{account[1]} exists already; left as it is",
                      file=sys.stderr)
                return False
            return True

        return await asyncio.gather(*(one(a, c) for a, c in zip(accounts, creds, strict=True)))

    created = sum(_run(_with_storage(config, action)) or [])
    print(f"created {created} of {len(accounts)} accounts")
    return 0


def _control(config: Config, command: str, **args):
    """Run ``command`` in the server running on this data directory; raises
    ControlUnavailable when none is."""
    from xmppd.control.client import ControlFailed, call
    from xmppd.control.protocol import socket_path

    try:
        return call(socket_path(config.data_dir), command, **args)
    except ControlFailed as exc:
        raise SystemExit(f"xmppd: {exc}") from None


def cmd_passwd(config: Config, args: argparse.Namespace) -> int:
    from xmppd.c2s.sasl import derive_all
    from xmppd.control.client import ControlUnavailable

    user, domain = _account(config, args.jid)
    creds = derive_all(_read_password())

    async def action(storage):
        return await storage.set_credentials(user, domain, creds)

    if not _run(_with_storage(config, action)):
        raise SystemExit(f"xmppd: no account {user}@{domain}")
    print(f"password changed for {user}@{domain}")
    if args.end_sessions:
        try:
            ended = _control(config, "password-changed", jid=f"{user}@{domain}")
        except ControlUnavailable:
            ended = 0
        print(f"ended {ended} session(s)")
    return 0


def cmd_deluser(config: Config, args: argparse.Namespace) -> int:
    """Delete an account: in the running server when there is one (its sessions end, its
    contacts' rosters are updated live), else through the modules in this process."""
    from xmppd.control.client import ControlUnavailable

    user, domain = _account(config, args.jid)
    jid = f"{user}@{domain}"
    try:
        _control(config, "deluser", jid=jid)
    except ControlUnavailable:
        _run(_offline_delete(config, jid))
    print(f"deleted {jid}")
    return 0


async def _offline_delete(config: Config, jid: str) -> None:
    from xmppd.control.commands import delete_account
    from xmppd.control.server import CommandError
    from xmppd.jid import JID
    from xmppd.preflight import prepare_data_dir
    from xmppd.server import Server

    prepare_data_dir(config)
    server = Server(config)
    await server.start(listen=False)
    try:
        await delete_account(server, JID(jid))
    except CommandError as exc:
        raise SystemExit(f"xmppd: {exc}") from None
    finally:
        await server.stop()


def _print_control(config: Config, command: str, **args) -> int:
    from xmppd.control.client import ControlUnavailable

    try:
        result = _control(config, command, **args)
    except ControlUnavailable as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 1
    if isinstance(result, dict):
        for key, value in result.items():
            print(f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}")
    elif isinstance(result, list):
        for item in result:
            print(item)
    elif command == "kick":
        print(f"ended {result} session(s)")
    return 0


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    return _print_control(config, "status")


def cmd_online(config: Config, args: argparse.Namespace) -> int:
    return _print_control(config, "online")


def cmd_kick(config: Config, args: argparse.Namespace) -> int:
    return _print_control(config, "kick", jid=args.jid)


def cmd_announce(config: Config, args: argparse.Namespace) -> int:
    """A headline to every online user of a domain (all served domains by default)."""
    from xmppd.control.client import ControlUnavailable

    text = " ".join(args.text) if args.text else sys.stdin.read().strip()
    if not text:
        raise SystemExit("xmppd: an announcement needs a text")
    if args.domain and args.domain.lower() not in config.domains:
        raise SystemExit(f"xmppd: {args.domain} is not a domain of this server "
                         f"({', '.join(config.domains)})")
    try:
        sent = _control(config, "announce", text=text, domain=args.domain and args.domain.lower(),
                        subject=args.subject)
    except ControlUnavailable as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 1
    print(f"sent to {sent} session(s)")
    return 0


def cmd_drain(config: Config, args: argparse.Namespace) -> int:
    """Start a graceful drain of the running server (``xmppd.drain``); it exits by itself
    once drained.  With ``--wait``, return only then."""
    import time

    from xmppd.control.client import ControlUnavailable

    try:
        state = _control(config, "drain", timeout_s=args.timeout, spread_s=args.spread)
    except ControlUnavailable as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 1
    print(f"draining: {state['sessions_left']} session(s) asked to reconnect over "
          f"{state['spread_s']:g}s; the server stops within {state['timeout_s']:g}s")
    if args.wait:  # until the process (the supervisor, with workers) let go of its lock
        from xmppd.preflight import lock_holder

        deadline = time.monotonic() + state["timeout_s"] + 60
        while time.monotonic() < deadline:
            if lock_holder(config.data_dir) is None:
                print("drained: the server has stopped")
                return 0
            time.sleep(0.2)
        print("xmppd: the server did not stop in time", file=sys.stderr)
        return 1
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def _positive(text: str) -> int:
    from xmppd.core.config import MAX_WORKERS

    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to {MAX_WORKERS}")
    return int(text)


def cmd_workers(config: Config, args: argparse.Namespace) -> int:
    """The sessions on each worker (``xmppd run --workers N``)."""
    from xmppd.control.client import ControlUnavailable

    try:
        result = _control(config, "workers")
    except ControlUnavailable as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 1
    for worker, jids in result.items():
        print(f"worker {worker}: {len(jids)} session(s)")
        for jid in jids:
            print(f"  {jid}")
    return 0


def cmd_cluster(config: Config, args: argparse.Namespace) -> int:
    """``xmppd cluster status``: the nodes Redis knows, read from Redis itself (works
    whether or not a node runs here)."""
    from xmppd.cluster.membership import RedisError, cluster_status

    if not config.cluster_redis:
        print("xmppd: no cluster configured (cluster.redis is empty)", file=sys.stderr)
        return 1
    try:
        nodes = _run(cluster_status(config.cluster_redis))
    except (OSError, RedisError, TimeoutError) as exc:
        print(f"xmppd: cannot read the cluster from Redis at {config.cluster_redis}: "
              f"{exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if not nodes:
        print("no node registered")
        return 0
    width = max(len("node"), *(len(n["node"]) for n in nodes))
    print(f"{'node':<{width}}  {'epoch':>16}  alive  sessions")
    for n in nodes:
        alive = ("draining" if n.get("draining") else "yes") if n["alive"] else "no"
        print(f"{n['node']:<{width}}  {n['epoch']:>16}  {alive:<5}  {n['sessions']:>8}")
    return 0


def _duration(text: str) -> float:
    """``3600``, ``90m``, ``12h`` or ``7d`` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 3600, 12h, 7d)") \
            from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return value


def cmd_invite(config: Config, args: argparse.Namespace) -> int:
    """A registration invitation: made by the running server, or by the modules in this
    process when none runs (the token is stored either way)."""
    from xmppd.control.client import ControlUnavailable

    domain = (args.domain or config.domains[0]).lower()
    if domain not in config.domains:
        raise SystemExit(f"xmppd: {domain} is not a domain of this server "
                         f"({', '.join(config.domains)})")
    try:
        invite = _control(config, "invite", domain=domain, expires_s=args.expires)
    except ControlUnavailable:
        invite = _run(_offline_invite(config, domain, args.expires))
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(invite["expires"]))
    print(invite["token"])
    print(invite["uri"])
    print(f"valid until {expires}")
    return 0


async def _offline_invite(config: Config, domain: str, expires: float | None) -> dict:
    from xmppd.control.commands import create_invite
    from xmppd.control.server import CommandError
    from xmppd.preflight import prepare_data_dir
    from xmppd.server import Server

    prepare_data_dir(config)
    server = Server(config)
    await server.start(listen=False)
    try:
        return await create_invite(server, domain, expires)
    except CommandError as exc:
        raise SystemExit(f"xmppd: {exc}") from None
    finally:
        await server.stop()


def cmd_reload(config: Config, args: argparse.Namespace) -> int:
    """Make the running server read its configuration file again; print what changed and
    what needs a restart.  Status 1 when it refused the file or a change failed."""
    from xmppd.control.client import ControlFailed, ControlUnavailable, call
    from xmppd.control.protocol import socket_path

    try:
        result = call(socket_path(config.data_dir), "reload", timeout=120)
    except (ControlUnavailable, ControlFailed) as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 1
    print(f"reloaded {result['config']}")
    for title, key in (("applied", "applied"), ("needs a restart", "restart"),
                       ("warning", "warnings"), ("FAILED", "failed")):
        for line in result[key]:
            print(f"{title}: {line}")
    if not (result["applied"] or result["restart"] or result["failed"]):
        print("nothing changed")
    return 1 if result["failed"] else 0


def cmd_cert(config: Config, args: argparse.Namespace) -> int:
    if args.cert_command == "check":
        return cmd_cert_check(config, args)
    from xmppd.transport.tls import generate_self_signed

    domain = args.domain.lower().rstrip(".")
    cert = config.certificate_for(domain)
    cert.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    generate_self_signed(domain, cert.cert, cert.key)
    print(f"wrote {cert.cert} and {cert.key}")
    return 0


def cmd_cert_check(config: Config, args: argparse.Namespace) -> int:
    """Per domain: the certificate file, its names against the domain and its services,
    the expiry; status 1 when something needs attention (also a warning)."""
    from xmppd.certcheck import check_all

    attention = False
    for report in check_all(config, args.warn_days):
        print(f"{report.domain}:")
        for line in report.lines:
            print(f"  {line}")
        for problem in report.problems:
            print(f"  ERROR: {problem}")
        for warning in report.warnings:
            print(f"  WARNING: {warning}")
        attention = attention or bool(report.problems or report.warnings)
    return 1 if attention else 0


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from xmppd.cluster.membership import cluster_problems
    from xmppd.cluster.supervisor import worker_problems
    from xmppd.preflight import check_all

    if not _check_modules(config):
        return 1
    problems = worker_problems(config, config.workers) + cluster_problems(config)
    if problems:
        for problem in problems:
            print(f"xmppd: configuration error: {problem}", file=sys.stderr)
        return 1
    for domain in config.domains:
        cert = config.certificate_for(domain)
        if domain not in config.certificates and not (cert.cert.exists() and cert.key.exists()):
            print(f"{domain}: no certificate yet; a self-signed one is generated on first start")
    warnings: list[str] = []
    problems = check_all(config, warnings)  # data dir, certificates, ports, database
    for problem in warnings + problems:
        print(problem)
    if problems:
        return 1
    print("configuration OK")
    return 0


def _copy_end(config: Config, role: str, spec: str) -> Storage:
    """The unopened storage of one end of ``storage copy``; SystemExit when it is unusable
    (bad URL, memory:, no source file, a server running on it)."""
    from xmppd.preflight import lock_holder
    from xmppd.storage import MemoryStorage, SQLiteStorage, storage_from_spec
    from xmppd.storage.postgresql import redact_url

    try:
        storage = storage_from_spec(spec)
    except ValueError as exc:
        raise SystemExit(f"xmppd: {role} {redact_url(spec)!r}: {exc}") from None
    if isinstance(storage, MemoryStorage):
        raise SystemExit(f"xmppd: {role}: memory: keeps nothing (use sqlite:///PATH or "
                         "postgresql://user:password@host/database)")
    if isinstance(storage, SQLiteStorage):
        storage.path = path = storage.path.resolve()
        if role == "FROM" and not path.is_file():
            raise SystemExit(f"xmppd: FROM: no SQLite database at {path}")
        dirs = {path.parent}
        configured = storage_from_spec(config.storage_url)
        if isinstance(configured, SQLiteStorage) and configured.path.resolve() == path:
            dirs.add(Path(config.data_dir).resolve())
        for directory in sorted(dirs):
            pid = lock_holder(directory)
            if pid is not None:
                who = f"an xmppd (PID {pid})" if pid else "an xmppd"
                raise SystemExit(f"xmppd: {role}: {who} is running on {directory}: stop it "
                                 "before copying its database")
    return storage


def _storage_name(storage: Storage) -> str:
    return getattr(storage, "name", None) or f"sqlite://{storage.path}"


def cmd_storage_copy(config: Config, args: argparse.Namespace) -> int:
    """Copy every account and every per-module datum of FROM into the empty TO, then
    compare their counts; status 1 (and the target a partial copy) when anything failed."""
    from xmppd.preflight import describe_error
    from xmppd.storage import StorageError
    from xmppd.storage.copy import census, copy_storage, differences, target_problem

    source, target = _copy_end(config, "FROM", args.source), _copy_end(config, "TO", args.target)
    if _storage_name(source) == _storage_name(target):
        raise SystemExit("xmppd: FROM and TO are the same database")
    shown: dict[str, float] = {}

    def progress(p: Progress) -> None:  # every finished kind, and a line every 2 s of a long one
        now = time.monotonic()
        what = {"keyvalue": "key-value"}.get(p.kind, p.kind) + (f" {p.namespace}"
                                                              if p.namespace else "")
        if p.finished:
            print(f"{what}: {p.done} copied", flush=True)
        elif p.done < p.total and now - shown.get(what, 0) >= 2:
            shown[what] = now
            print(f"{what}: {p.done} of {p.total}", flush=True)

    async def main() -> int:
        opened = []
        try:
            for role, storage in (("FROM", source), ("TO", target)):
                try:
                    await storage.open()
                except (StorageError, OSError) as exc:
                    text = str(exc) if isinstance(exc, StorageError) else describe_error(exc)
                    raise SystemExit(f"xmppd: {role}: {text}") from None
                opened.append(storage)
            problem = target_problem(await census(target))
            if problem:
                raise SystemExit(f"xmppd: TO {_storage_name(target)}: {problem}")
            print(f"copying {_storage_name(source)} to {_storage_name(target)}", flush=True)
            started = time.monotonic()
            try:
                copied = await copy_storage(source, target, batch=args.batch, progress=progress)
            except StorageError as exc:
                raise SystemExit(f"xmppd: copy failed: {exc}; {_storage_name(target)} holds "
                                 "a partial copy: empty it before trying again") from None
            elapsed = time.monotonic() - started
            problems = (differences(copied, await census(source), "copied", "in FROM now")
                        + differences(copied, await census(target), "copied", "in TO"))
        finally:
            for storage in opened:
                await storage.close()
        for line in problems:
            print(f"xmppd: verification failed: {line}", file=sys.stderr)
        if problems:
            print("xmppd: was a server using FROM or TO during the copy?", file=sys.stderr)
            return 1
        rows = sum(copied.keyvalue.values())
        items = sum(copied.archive.values())
        print(f"copied {copied.accounts} account(s) ({copied.disabled} disabled), {rows}"
              f" key-value row(s) in {len(copied.keyvalue)} namespace(s), {items} archive"
              f" item(s) in {len(copied.archive)} namespace(s), {len(copied.versions)} store"
              f" version(s) in {elapsed:.1f} s; verified")
        return 0

    return _run(main())


def _page_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 100000")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="TOML configuration file", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="xmppd", description="xmppd XMPP server",
                                     parents=[common])
    parser.add_argument("--version", action="store_true", help="print version and implementation")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", parents=[common], help="run the server")
    run.add_argument("--workers", type=_positive, metavar="N", help="run N worker processes "
                     "sharing the listeners (default: server.workers)")
    # internal: the supervisor starts each worker with its number
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    for name, text in (("adduser", "create an account"), ("passwd", "change a password"),
                       ("deluser", "delete an account and all its data"),
                       ("kick", "end the sessions of a JID (all of an account's for user@domain)")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("jid", help="user@domain" + ("[/resource]" if name == "kick" else ""))
        if name == "passwd":
            p.add_argument("--end-sessions", action="store_true",
                           help="also end the account's sessions in the running server")
    sub.add_parser("status", parents=[common], help="the running server's status")
    sub.add_parser("online", parents=[common], help="the running server's online sessions")
    sub.add_parser("workers", parents=[common], help="the sessions on each worker process "
                   "(with server.workers > 1)")
    sub.add_parser("reload", parents=[common], help="make the running server read its "
                   "configuration file again (as SIGHUP does)")
    drain = sub.add_parser("drain", parents=[common], help="stop accepting connections, ask "
                           "the clients to reconnect elsewhere, then stop (as SIGUSR1 does)")
    drain.add_argument("--timeout", type=_seconds, metavar="S", help="serve detached "
                       "sessions awaiting resumption elsewhere at most this long (default: "
                       "server.drain_timeout_s)")
    drain.add_argument("--spread", type=_seconds, metavar="S", help="ask the clients to go "
                       "over this long (default: server.drain_spread_s)")
    drain.add_argument("--wait", action="store_true", help="return once the server stopped")
    imp = sub.add_parser("import-accounts", parents=[common],
                         help="create accounts from 'user@domain<TAB>password' lines")
    imp.add_argument("file", help="the file to read, or - for stdin")
    cert = sub.add_parser("cert", parents=[common], help="certificates")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True)
    gen = cert_sub.add_parser("generate", parents=[common], help="generate a self-signed certificate")
    gen.add_argument("domain")
    chk = cert_sub.add_parser("check", parents=[common], help="which certificate each domain "
                              "uses, the names it covers, its expiry")
    chk.add_argument("--warn-days", type=int, default=30, metavar="N",
                     help="warn when a certificate expires in fewer days (default 30)")
    ann = sub.add_parser("announce", parents=[common],
                         help="send a message to every online user (of a domain)")
    ann.add_argument("text", nargs="*", help="the message (default: read from stdin)")
    ann.add_argument("--domain", help="only this served domain's users (default: all)")
    ann.add_argument("--subject", help="a subject line")
    inv = sub.add_parser("invite", parents=[common],
                         help="create an invitation token for in-band registration")
    inv.add_argument("--domain", help="the domain to register on (default: the first)")
    inv.add_argument("--expires", type=_duration, metavar="DURATION",
                     help="valid this long (seconds, or 12h, 7d; default: the register "
                     "module's invite_expiry_s)")
    stor = sub.add_parser("storage", parents=[common], help="storage maintenance")
    stor_sub = stor.add_subparsers(dest="storage_command", required=True)
    cp = stor_sub.add_parser(
        "copy", parents=[common], help="copy all data (accounts, every module's stores) into "
        "an empty database of any backend; stop the servers using FROM first",
        description="Copy every account and every module's data from FROM into TO, which "
        "must be empty, then compare their counts. A URL is sqlite:///PATH or "
        "postgresql://user:password@host:port/database.")
    cp.add_argument("source", metavar="FROM", help="the storage URL to copy from")
    cp.add_argument("target", metavar="TO", help="the storage URL to copy to (empty)")
    cp.add_argument("--batch", type=_page_size, default=1000, metavar="N",
                    help="rows read and written at a time (default 1000)")
    clu = sub.add_parser("cluster", parents=[common], help="the cluster of nodes (cluster.redis)")
    clu_sub = clu.add_subparsers(dest="cluster_command", required=True)
    clu_sub.add_parser("status", parents=[common], help="nodes, epochs, whether each is alive, "
                       "sessions per node (read from Redis)")
    sub.add_parser("check", parents=[common], help="validate the configuration and certificates")
    sub.add_parser("config-reference", help="print the configuration reference (docs/CONFIG.md)")
    return parser


COMMANDS = {
    "run": cmd_run,
    "adduser": cmd_adduser,
    "import-accounts": cmd_import_accounts,
    "passwd": cmd_passwd,
    "deluser": cmd_deluser,
    "kick": cmd_kick,
    "status": cmd_status,
    "online": cmd_online,
    "workers": cmd_workers,
    "reload": cmd_reload,
    "drain": cmd_drain,
    "cert": cmd_cert,
    "announce": cmd_announce,
    "invite": cmd_invite,
    "check": cmd_check,
    "storage": cmd_storage_copy,  # its only subcommand, "copy"
    "cluster": cmd_cluster,  # its only subcommand, "status"
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "config-reference":
        from xmppd.configref import render

        sys.stdout.write(render())
        return 0
    if args.version:
        from xmppd._impl import implementation

        print(f"xmppd {__version__} ({implementation()})")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        config = load(getattr(args, "config", None))
    except ConfigError as exc:
        unchanged = "; nothing was reloaded" if args.command == "reload" else ""
        print(f"xmppd: configuration error: {exc}{unchanged}", file=sys.stderr)
        return 1
    from xmppd import logs

    logs.setup(config.log_level, config.log_format)
    from xmppd.preflight import PreflightError, describe_error
    from xmppd.storage import StorageError

    try:
        return COMMANDS[args.command](config, args)
    except (PreflightError, ConfigError) as exc:  # operator errors: one line, no traceback
        print(f"xmppd: {exc}", file=sys.stderr)
    except (OSError, StorageError) as exc:
        print(f"xmppd: {describe_error(exc)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
