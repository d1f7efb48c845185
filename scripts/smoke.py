#!/usr/bin/env python3
"""Smoke test of an installed xmppd: the ``xmppd`` command, two accounts, one message.

    python scripts/smoke.py                 # the xmppd beside this Python (or -m xmppd.cli)
    python scripts/smoke.py --xmppd /usr/local/bin/xmppd --allow-pure

Checks ``xmppd --version`` reports the compiled core (unless ``--allow-pure``), writes a
temporary config (loopback, ephemeral port, temporary data directory, JSON logs), creates
``alice`` and ``bob`` with ``xmppd adduser``, starts ``xmppd run``, logs both in over
STARTTLS + SCRAM-SHA-256 with a raw socket, sends a message from alice to bob's bare JID,
checks it arrives, asks the server's disco#info, then stops the server with SIGTERM and
expects exit status 0 and no ERROR in its log.  Only the standard library is used, so it
runs in a bare virtualenv holding nothing but the xmppd wheel.  Exit status 0 = passed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import queue
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DOMAIN = "localhost"
HEADER = (
    "<?xml version='1.0'?><stream:stream to='{0}' version='1.0' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams'>"
)
CONFIG = """\
[server]
domains = ["{domain}"]
data_dir = "{data}"
log_format = "json"

[c2s]
listen = ["127.0.0.1:0"]
direct_tls = []

[http]
listen = ["127.0.0.1:0"]
listen_tls = []

[modules.contact]
abuse = ["mailto:abuse@{domain}"]
"""


class SmokeError(Exception):
    pass


def xmppd_command(given: str | None) -> list[str]:
    if given:
        return shlex.split(given)
    beside = Path(sys.executable).with_name("xmppd")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("xmppd")
    return [found] if found else [sys.executable, "-m", "xmppd.cli"]


class Client:
    """A blocking raw-socket client: STARTTLS, SCRAM-SHA-256, bind."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.timeout = timeout

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def read_until(self, pattern: str, whole: bool = False) -> str:
        """Consume input up to ``pattern``: all of it, or with ``whole`` only the match."""
        deadline = time.monotonic() + self.timeout
        regex = re.compile(pattern, re.S)
        while True:
            text = self.buffer.decode(errors="replace")
            if m := regex.search(text):
                self.buffer = self.buffer[len(text[: m.end()].encode()):]
                return text[m.start():m.end()] if whole else text[: m.end()]
            if time.monotonic() > deadline:
                raise SmokeError(f"timed out waiting for {pattern!r}; got {text[-300:]!r}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SmokeError(f"connection closed waiting for {pattern!r}; got {text!r}")
            self.buffer += chunk

    def header(self) -> str:
        self.send(HEADER.format(DOMAIN))
        return self.read_until(r"</stream:features>")

    def login(self, user: str, password: str, resource: str) -> str:
        features = self.header()
        if "urn:ietf:params:xml:ns:xmpp-tls" not in features:
            raise SmokeError(f"no STARTTLS offered: {features}")
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(r"<proceed[^>]*/>")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the self-signed certificate of a fresh data dir
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.buffer = b""
        if "SCRAM-SHA-256" not in self.header():
            raise SmokeError("SCRAM-SHA-256 not offered")
        self._scram(user, password)
        self.header()
        self.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        return re.search(r"<jid>(.*?)</jid>", self.read_until(r"</iq>")).group(1)

    def _scram(self, user: str, password: str) -> None:
        b64 = base64.b64encode
        first_bare = f"n={user},r={secrets.token_urlsafe(18)}"
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
                  f"{b64(('n,,' + first_bare).encode()).decode()}</auth>")
        challenge = self.read_until(r"<challenge[^>]*>.*?</challenge>|<failure.*?</failure>", whole=True)
        if challenge.startswith("<failure"):
            raise SmokeError(f"SASL failed: {challenge}")
        server_first = base64.b64decode(re.sub(r"<[^>]*>", "", challenge)).decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        final_bare = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                  f"{b64(f'{final_bare},p={b64(proof).decode()}'.encode()).decode()}</response>")
        outcome = self.read_until(r"<success[^>]*(/>|>.*?</success>)|<failure.*?</failure>", whole=True)
        if not outcome.startswith("<success"):
            raise SmokeError(f"SASL failed: {outcome}")
        verifier = base64.b64decode(re.sub(r"<[^>]*>", "", outcome)).decode()
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        expected = b64(hmac.digest(server_key, auth_message, "sha256")).decode()
        if verifier != f"v={expected}":
            raise SmokeError("the server's SCRAM signature is wrong")

    def close(self) -> None:
        try:
            self.send("</stream:stream>")
            self.sock.close()
        except OSError:
            pass


def run(cmd: list[str], *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([*cmd, *args], input=stdin, capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise SmokeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def smoke(cmd: list[str], allow_pure: bool, workdir: Path) -> None:
    version = run(cmd, "--version")
    print(f"smoke: {version}")
    if "compiled" not in version and not allow_pure:
        raise SmokeError(f"not the compiled core: {version!r}")

    config = workdir / "xmppd.toml"
    config.write_text(CONFIG.format(domain=DOMAIN, data=workdir / "data"))
    passwords = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}
    for user, password in passwords.items():
        run(cmd, "--config", str(config), "adduser", f"{user}@{DOMAIN}", stdin=password + "\n")
    print("smoke: accounts created")

    server = subprocess.Popen([*cmd, "--config", str(config), "run"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        for line in server.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()

    def next_record(deadline: float) -> dict | None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise SmokeError("timed out waiting for the server's log") from None
        if line is None:
            return None
        log.append(line)
        try:
            return json.loads(line)
        except ValueError:
            raise SmokeError(f"log line is not JSON: {line!r}") from None

    try:
        port = None
        deadline = time.monotonic() + 60
        while True:
            record = next_record(deadline)
            if record is None:
                raise SmokeError(f"the server exited ({server.wait()}) before it started")
            if m := re.match(r"listening for c2s on 127\.0\.0\.1:(\d+)", record["message"]):
                port = int(m.group(1))
            if " started: " in record["message"]:
                break
        if port is None:
            raise SmokeError("no c2s listener in the log")
        print(f"smoke: server started on port {port}")

        alice, bob = Client(port), Client(port)
        print(f"smoke: logged in as {alice.login('alice', passwords['alice'], 'smoke')} "
              f"and {bob.login('bob', passwords['bob'], 'smoke')}")
        bob.send("<presence/>")
        bob.read_until(r"<presence[^>]*from=.bob@localhost/smoke.[^>]*(/>|>.*?</presence>)")
        body = f"hello {secrets.token_hex(4)}"
        alice.send(f"<message to='bob@{DOMAIN}' type='chat' id='m1'><body>{body}</body></message>")
        got = bob.read_until(r"<message[^>]*>.*?</message>", whole=True)
        if f"<body>{body}</body>" not in got or "alice@localhost/smoke" not in got:
            raise SmokeError(f"bob got the wrong message: {got}")
        print("smoke: message delivered")
        alice.send(f"<iq type='get' id='d1' to='{DOMAIN}'>"
                   "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        info = alice.read_until(r"<iq[^>]*id=.d1.[^>]*>.*?</iq>", whole=True)
        if "http://jabber.org/network/serverinfo" not in info or "mailto:abuse@" not in info:
            raise SmokeError(f"no contact addresses in disco#info: {info}")
        print("smoke: disco#info carries the contact addresses")
        alice.close()
        bob.close()

        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while next_record(deadline) is not None:
            pass
        status = server.wait(timeout=30)
        if status != 0:
            raise SmokeError(f"xmppd run exited with status {status} after SIGTERM")
        errors = [line for line in log if json.loads(line)["level"] in ("ERROR", "CRITICAL")]
        if errors:
            raise SmokeError("errors in the log:\n" + "\n".join(errors))
        print("smoke: server stopped cleanly (exit status 0)")
    except BaseException:
        if server.poll() is None:
            server.kill()
            server.wait()
        sys.stderr.write("--- server log ---\n" + "\n".join(log) + "\n")
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--xmppd", help="the xmppd command, e.g. \"python -m xmppd.cli\" (default: beside this Python)")
    parser.add_argument("--allow-pure", action="store_true",
                        help="accept the pure-Python implementation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xmppd-smoke-") as tmp:
        try:
            smoke(xmppd_command(args.xmppd), args.allow_pure, Path(tmp))
        except SmokeError as exc:
            print(f"smoke: FAILED: {exc}", file=sys.stderr)
            return 1
    print("smoke: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
