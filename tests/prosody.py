"""Test helpers for federation: a tiny DNS server, a test CA, and a Prosody instance.

``DNSServer`` answers A/AAAA/SRV queries from a table, on an ephemeral UDP port of
127.0.0.1.  It lets our resolver be tested against real DNS messages, and lets Prosody find
xmppd through ``_xmpp-server._tcp`` SRV records on an ephemeral port: Prosody's libunbound
resolver is pointed at it with ``unbound = { forward = "127.0.0.1@port" }``, so no
``/etc/hosts`` editing and no fixed port 5269 are needed.
"""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# -- DNS ------------------------------------------------------------------------------------


class DNSServer:
    """Authoritative answers for ``records``: ``{(name, type): [rdata text, ...]}``, e.g.
    ``{("_xmpp-server._tcp.example.org", "SRV"): ["0 5 5269 xmpp.example.org."]}``."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = {(n.lower().rstrip("."), t.upper()): v for (n, t), v in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.queries: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def add(self, name: str, rdtype: str, *rdata: str) -> None:
        self.records[(name.lower().rstrip("."), rdtype.upper())] = list(rdata)

    def __enter__(self) -> DNSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 - garbage in, nothing out
                continue
            self.sock.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        for question in query.question:
            name = question.name.to_text(omit_final_dot=True).lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            rdata = self.records.get((name, rdtype))
            if rdata:
                response.answer.append(
                    dns.rrset.from_text(question.name, 5, dns.rdataclass.IN, rdtype, *rdata)
                )
            elif not any(n == name for n, _t in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response


# -- certificates ---------------------------------------------------------------------------


class CertAuthority:
    """A throwaway certification authority issuing server certificates for domains."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xmppd test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), False)
            .sign(self.key, hashes.SHA256())
        )
        self.path = self.dir / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, domain: str) -> tuple[Path, Path]:
        """(cert, key) paths for ``domain`` (and ``*.domain``), serverAuth and clientAuth."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.dir / f"{domain}.crt", self.dir / f"{domain}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(key_path, 0o600)
        return cert_path, key_path


# -- Prosody --------------------------------------------------------------------------------

PROSODY = shutil.which("prosody")
PROSODYCTL = shutil.which("prosodyctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"the server did not listen on {port}")


class Prosody:
    """A Prosody instance in a temporary directory, on loopback ports of its own.

    It serves ``domain``; its resolver only asks ``dns`` (our :class:`DNSServer`).  As root,
    it runs as the ``prosody`` user (Prosody refuses to run as root).
    """

    def __init__(
        self, domain: str, dns_address: tuple[str, int], cert: Path, key: Path,
        ca_file: Path | None = None, secure_auth: bool = False, bidi: bool = False,
    ) -> None:
        self.domain = domain
        self.dir = Path(tempfile.mkdtemp(prefix="xmppd-prosody-"))
        os.chmod(self.dir, 0o755)
        self.c2s_port, self.s2s_port = free_port(), free_port()
        shutil.copy(cert, self.dir / "cert.pem")
        shutil.copy(key, self.dir / "key.pem")
        self.config = self.dir / "prosody.cfg.lua"
        cafile = ""
        if ca_file:  # copied: the prosody user cannot read pytest's private tmp_path
            shutil.copy(ca_file, self.dir / "ca.pem")
            cafile = f'cafile = "{self.dir}/ca.pem";'

        self.config.write_text(f"""
daemonize = false
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.dir}/data"
plugin_paths = {{}}
log = {{ debug = "{self.dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
s2s_ports = {{ {self.s2s_port} }}
c2s_direct_tls_ports = {{}}
s2s_direct_tls_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
modules_enabled = {{ "roster", "saslauth", "tls", "dialback", "disco", "ping", "presence",
                    {'"s2s_bidi"' if bidi else ""} }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
s2s_require_encryption = true
s2s_secure_auth = {"true" if secure_auth else "false"}
ssl = {{ certificate = "{self.dir}/cert.pem"; key = "{self.dir}/key.pem"; {cafile} }}
certificates = "{self.dir}"
unbound = {{
    resolvconf = false; hoststxt = false;
    forward = "{dns_address[0]}@{dns_address[1]}";
    options = {{ ["do-not-query-localhost"] = "no" }};
}}
VirtualHost "{domain}"
""")
        (self.dir / "data").mkdir()
        self._as_prosody: list[str] = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("prosody")
            except KeyError:
                pass
            else:
                subprocess.run(["chown", "-R", "prosody:prosody", str(self.dir)], check=True)
                self._as_prosody = ["setpriv", "--reuid=prosody", "--regid=prosody", "--init-groups"]
        self.proc: subprocess.Popen | None = None

    def register(self, user: str, password: str) -> None:
        subprocess.run(
            [*self._as_prosody, PROSODYCTL, "--config", str(self.config),
             "register", user, self.domain, password],
            check=True, capture_output=True, timeout=30,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self._as_prosody, PROSODY, "--config", str(self.config), "-F"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.c2s_port, self.proc)
        wait_port(self.s2s_port, self.proc)

    def log(self) -> str:
        try:
            return (self.dir / "prosody.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- ejabberd -------------------------------------------------------------------------------

EJABBERDCTL = shutil.which("ejabberdctl") or (
    "/usr/sbin/ejabberdctl" if os.path.exists("/usr/sbin/ejabberdctl") else None)


class Ejabberd:
    """An ejabberd node (Debian's ``ejabberd``) in a temporary directory, on loopback ports.

    It serves ``domains`` (``certs``: one (cert, key) per domain) and runs ``ejabberdctl
    foreground`` with its own config, spool, logs, cookie (``HOME``) and node name; as root,
    as the ``ejabberd`` user.  Erlang distribution uses a port of its own (``ERL_DIST_PORT``),
    so neither the node nor ``ejabberdctl`` starts or needs ``epmd``.

    How it finds xmppd: ejabberd asks SRV records with Erlang's own resolver (``inet_res``),
    which an ``ERL_INETRC`` file points at our :class:`DNSServer` -- but it resolves the SRV
    *target* with ``net:getaddrinfo`` (libc, ``/etc/hosts``), so the SRV record must name a
    host the system knows: ``localhost.`` (see :meth:`srv_target`).
    """

    #: what the SRV record for xmppd must point at (ejabberd resolves it with getaddrinfo)
    srv_target = "localhost."

    def __init__(
        self, domains: list[str], dns_address: tuple[str, int], certs: list[tuple[Path, Path]],
        ca_file: Path | None = None, dialback: bool = True,
    ) -> None:
        self.domains = list(domains)
        self.domain = self.domains[0]
        self.dir = Path(tempfile.mkdtemp(prefix="xmppd-ejabberd-"))
        os.chmod(self.dir, 0o755)
        self.c2s_port, self.s2s_port, dist_port = free_port(), free_port(), free_port()
        self.node = f"xmppd{self.s2s_port}@localhost"
        certfiles = []
        for n, (cert, key) in enumerate(certs):
            pem = self.dir / f"cert{n}.pem"
            pem.write_bytes(Path(cert).read_bytes() + Path(key).read_bytes())
            certfiles.append(f'"{pem}"')
        cafile = ""
        if ca_file:  # copied: the ejabberd user cannot read pytest's private tmp_path
            shutil.copy(ca_file, self.dir / "ca.pem")
            cafile = f'ca_file: "{self.dir}/ca.pem"\ns2s_cafile: "{self.dir}/ca.pem"\n'
        (self.dir / "inetrc").write_text(  # ejabberdctl sets ERL_INETRC=<config dir>/inetrc
            # Order matters: {resolv_conf, ""} drops the nameservers set before it.
            '{resolv_conf, ""}.\n{hosts_file, ""}.\n'  # only what is said here
            f"{{nameserver, {{{dns_address[0].replace('.', ',')}}}, {dns_address[1]}}}.\n"
            '{host, {127,0,0,1}, ["localhost"]}.\n'  # the node name's host
            "{cache_size, 0}.\n"  # tests change records (xmppd's port) within their TTL
            "{lookup, [file, dns]}.\n"
        )
        (self.dir / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE={self.node}\nERL_DIST_PORT={dist_port}\n")
        hosts = ", ".join(f'"{d}"' for d in self.domains)
        (self.dir / "ejabberd.yml").write_text(f"""
hosts: [{hosts}]
loglevel: debug
certfiles: [{", ".join(certfiles)}]
{cafile}listen:
  - port: {self.c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
  - port: {self.s2s_port}
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
s2s_use_starttls: required
s2s_dns_timeout: 5
s2s_dns_retries: 1
outgoing_s2s_families: [ipv4]
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  s2s:
    allow: all
auth_method: internal
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_version: {{}}
{"  mod_s2s_dialback: {}" if dialback else ""}
""")
        for sub in ("logs", "spool"):
            (self.dir / sub).mkdir()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(self.dir)], check=True)
            self._as_user = ["setpriv", "--reuid=ejabberd", "--regid=ejabberd", "--init-groups"]
        self.env = dict(os.environ, HOME=str(self.dir), ERL_EPMD_ADDRESS="127.0.0.1")
        self.proc: subprocess.Popen | None = None

    def _ctl(self, *args: str) -> list[str]:
        d = self.dir
        return [*self._as_user, EJABBERDCTL, "--config-dir", str(d), "--config",
                str(d / "ejabberd.yml"), "--ctl-config", str(d / "ejabberdctl.cfg"),
                "--logs", str(d / "logs"), "--spool", str(d / "spool"), "--node", self.node,
                *args]

    def start(self) -> None:
        self.proc = subprocess.Popen(self._ctl("foreground"), cwd=self.dir, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            wait_port(self.c2s_port, self.proc, timeout=60)
            wait_port(self.s2s_port, self.proc, timeout=60)
        except BaseException:
            self.stop()
            raise

    def register(self, user: str, password: str, domain: str | None = None) -> None:
        # Its listeners open before Mnesia has created every table: on a busy machine the
        # first commands can find the password table missing ("no_exists"); wait for it.
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(self._ctl("register", user, domain or self.domain, password),
                                  cwd=self.dir, env=self.env, capture_output=True, text=True,
                                  timeout=60)
            if done.returncode == 0:
                return
            if "no_exists" not in done.stdout + done.stderr or time.monotonic() > deadline:
                raise RuntimeError(f"ejabberdctl register: {done.stdout} {done.stderr}")
            time.sleep(0.5)

    def log(self, since: int = 0) -> str:
        """The log, from byte offset ``since`` (see :meth:`log_size`)."""
        try:
            with open(self.dir / "logs" / "ejabberd.log", "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return (self.dir / "logs" / "ejabberd.log").stat().st_size
        except OSError:
            return 0

    def stop(self) -> None:
        """Kill the node's process group (ejabberdctl, erl, beam.smp; nothing is detached:
        no epmd) and wait until none of it is left."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
