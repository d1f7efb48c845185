#!/usr/bin/env python3
"""Create the benchmark accounts (<prefix>0 .. <prefix>N-1, one shared password) on a server.

Pluggable per target:

* ``prosody``: writes Prosody 0.12 ``internal_hashed`` account files directly (one Lua table
  per user with SCRAM-SHA-1 stored_key/server_key/salt/iteration_count, the exact format
  ``prosodyctl adduser`` writes) -- thousands of accounts per second instead of one
  ``prosodyctl`` process per account. Prosody reads the file store at each login, so
  accounts written while it runs are usable at once.
* ``xmppd``: ``provision_xmppd`` runs ``xmppd --config CONFIG adduser USER@DOMAIN`` with the
  password on stdin, a few processes at a time; swap in a bulk import when the CLI has one.
* ``ejabberd``: the ``register`` command of ejabberd's HTTP API (``mod_http_api`` on a
  loopback listener), a few requests at a time: one ``ejabberdctl`` per account would start
  an Erlang node each time.
* ``stub``: nothing to do (the stub accepts any account).

    python benchmarks/provision.py prosody --data-path /tmp/p/data --host localhost -n 5000
    python benchmarks/provision.py xmppd --config /tmp/x/xmppd.toml --host localhost -n 5000
    python benchmarks/provision.py ejabberd --api http://127.0.0.1:15281/api --host localhost -n 5000
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import pwd
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterable

#: Prosody's defaults: mod_auth_internal_hashed uses SCRAM-SHA-1 and 10 000 iterations (0.12).
PROSODY_ITERATIONS = 10000


def bench_users(prefix: str, count: int, domain: str) -> list[str]:
    """Bare JIDs of the benchmark accounts, in the order the load generator uses them."""
    return [f"{prefix}{i}@{domain}" for i in range(count)]


def prosody_escape(name: str) -> str:
    """util.datamanager's path encoding: every non-alphanumeric byte becomes %xx."""
    return re.sub(rb"\W", lambda m: b"%%%02x" % m.group(0)[0], name.encode()).decode()


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prosody_account(password: str, salt: str, iterations: int = PROSODY_ITERATIONS) -> str:
    """The Lua source of one internal_hashed account file (SCRAM-SHA-1 keys as hex)."""
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), iterations)
    stored_key = hashlib.sha1(hmac.digest(salted, b"Client Key", "sha1")).hexdigest()
    server_key = hmac.digest(salted, b"Server Key", "sha1").hex()
    return (
        "return {\n"
        f'\t["server_key"] = "{server_key}";\n'
        f'\t["iteration_count"] = {iterations};\n'
        f'\t["stored_key"] = "{stored_key}";\n'
        f'\t["salt"] = {_lua_string(salt)};\n'
        "};\n"
    )


def provision_prosody(data_path: str, users: Iterable[str], password: str, *, shared_salt: bool = False,
                      iterations: int = PROSODY_ITERATIONS, owner: str | None = "prosody") -> int:
    """Write account files under ``data_path``; returns the number written.

    ``shared_salt`` gives every account the same salt: the server's per-login SCRAM work is
    unchanged, but provisioning and the generator's untimed warm-up cost one PBKDF2 in total.
    """
    made_dirs: set[str] = set()
    shared = str(uuid.uuid4())
    shared_text = prosody_account(password, shared, iterations) if shared_salt else ""
    count = 0
    ids = None
    if owner and os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(owner)
            ids = (entry.pw_uid, entry.pw_gid)
        except KeyError:
            ids = None
    for jid in users:
        user, host = jid.split("@", 1)
        directory = os.path.join(data_path, prosody_escape(host), "accounts")
        if directory not in made_dirs:
            os.makedirs(directory, exist_ok=True)
            made_dirs.add(directory)
            if ids is not None:  # prosodyctl/prosody run as the prosody user and must write here
                for path in (data_path, os.path.dirname(directory), directory):
                    os.chown(path, *ids)
        text = shared_text or prosody_account(password, str(uuid.uuid4()), iterations)
        path = os.path.join(directory, prosody_escape(user) + ".dat")
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o640)
        if ids is not None:
            os.chown(path, *ids)
        count += 1
    return count


def _provision_xmppd_in_process(config_path: str, jids: list[str], password: str) -> int:
    """Bulk path: the same calls ``xmppd adduser`` makes, in one process, one credential set.

    Uses xmppd's internal API (config.load, sasl.derive_all, storage.open_storage), which is
    still moving: any import/attribute error makes the caller fall back to the CLI.
    """
    import asyncio

    from xmppd.c2s.sasl import derive_all
    from xmppd.core.config import load
    from xmppd.storage import AccountExists, open_storage

    config = load(config_path)
    creds = derive_all(password)  # shared salt: one PBKDF2 per hash for all accounts

    async def run() -> int:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        storage = await open_storage(config.storage_url)
        try:
            for jid in jids:
                user, domain = jid.split("@", 1)
                try:
                    await storage.create_account(user, domain, creds)
                except AccountExists:
                    await storage.set_credentials(user, domain, creds)
        finally:
            await storage.close()
        return len(jids)

    return asyncio.run(run())


def xmppd_config(data_dir: object, port: int, domain: str = "localhost", extra: str = "") -> str:
    """A benchmark server's TOML: c2s on loopback ``port`` without TLS requirements, no
    direct TLS or HTTP listeners, the default modules, the per-address limits out of the
    way of a generator with thousands of connections from one address; ``extra`` appended
    (a ``[cluster]`` table)."""
    from xmppd.core.manager import DEFAULT_MODULES

    modules = ", ".join(f'"{m}"' for m in DEFAULT_MODULES)
    return f"""
[server]
domains = ["{domain}"]
data_dir = "{data_dir}"
log_level = "warning"

[c2s]
listen = ["127.0.0.1:{port}"]
direct_tls = []
require_encryption = false
allow_plain = true

[http]
listen = []
listen_tls = []

[limits]
max_preauth_connections_per_ip = 1000000
auth_failed_usernames_per_ip_per_min = 1000000
rate_limit_bytes_per_s = 0

[modules]
enabled = [{modules}]
{extra}
"""


def provision_xmppd(config_path: str, users: Iterable[str], password: str, *, xmppd: str | None = None,
                    bulk: bool = True) -> int:
    """Create accounts with ``xmppd --config CONFIG import-accounts -``.

    With ``bulk`` (default) first try the in-process path, which gives every account the same
    salted keys (seconds for thousands of accounts; fine for a benchmark, never for real
    users); the CLI derives keys per account on every core.
    """
    jids = list(users)
    if bulk:
        try:
            return _provision_xmppd_in_process(config_path, jids, password)
        except (ImportError, AttributeError, TypeError) as exc:
            print(f"provision: xmppd bulk path unavailable ({exc}); using the CLI", file=sys.stderr)
    exe = xmppd or os.environ.get("XMPPD") or shutil.which("xmppd")
    if exe is None:
        raise FileNotFoundError("xmppd executable not found (set XMPPD or put it on PATH)")
    # One process for all accounts; existing accounts are left alone (reruns are fine).
    lines = "".join(f"{jid}\t{password}\n" for jid in jids)
    done = subprocess.run([exe, "--config", config_path, "import-accounts", "-"],
                          input=lines.encode(), capture_output=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"xmppd import-accounts failed: {done.stderr.decode(errors='replace')}")
    return len(jids)


def provision_ejabberd(api: str, users: Iterable[str], password: str, *, parallel: int = 4) -> int:
    """Register each account through ejabberd's HTTP API; existing accounts are left alone."""
    import json
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def register(jid: str) -> None:
        user, host = jid.split("@", 1)
        body = json.dumps({"user": user, "host": host, "password": password}).encode()
        req = urllib.request.Request(api.rstrip("/") + "/register", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=60).read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            if "already registered" not in text:  # reruns keep the accounts they made
                raise RuntimeError(f"ejabberd register {jid}: {exc.code} {text}") from None

    jids = list(users)
    with ThreadPoolExecutor(parallel) as pool:
        for _ in pool.map(register, jids):
            pass
    return len(jids)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=["prosody", "xmppd", "ejabberd", "stub"])
    p.add_argument("-n", "--count", type=int, default=1000)
    p.add_argument("--host", default="localhost", help="XMPP domain of the accounts")
    p.add_argument("--prefix", default="user")
    p.add_argument("--password", default="bench")
    p.add_argument("--data-path", help="prosody: its data_path")
    p.add_argument("--shared-salt", action="store_true", help="prosody: one salt for all accounts")
    p.add_argument("--iterations", type=int, default=PROSODY_ITERATIONS)
    p.add_argument("--config", help="xmppd: its config file")
    p.add_argument("--api", help="ejabberd: its mod_http_api URL, e.g. http://127.0.0.1:15281/api")
    args = p.parse_args(argv)
    users = bench_users(args.prefix, args.count, args.host)
    if args.target == "prosody":
        if not args.data_path:
            p.error("--data-path is required for prosody")
        n = provision_prosody(args.data_path, users, args.password, shared_salt=args.shared_salt,
                              iterations=args.iterations)
    elif args.target == "xmppd":
        if not args.config:
            p.error("--config is required for xmppd")
        n = provision_xmppd(args.config, users, args.password)
    elif args.target == "ejabberd":
        if not args.api:
            p.error("--api is required for ejabberd")
        n = provision_ejabberd(args.api, users, args.password)
    else:
        n = 0
    print(f"provisioned {n} accounts on {args.target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
