"""The server configuration: frozen dataclasses loaded from TOML, with working defaults.

Units are in the names (``_s`` seconds, ``_bytes`` bytes).  With no file at all, xmppd serves
``localhost`` on loopback, keeps its data in ``$XDG_DATA_HOME/xmppd`` (or ``~/.local/share``),
and generates a self-signed certificate there on first start.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
#: More worker processes than this is a typo, not a deployment (each holds a full replica).
MAX_WORKERS = 256


class ConfigError(ValueError):
    """The configuration file is unreadable or has an invalid value (message says which)."""


def default_data_dir() -> Path:
    env = os.environ.get("XMPPD_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "xmppd"


@dataclass(frozen=True)
class Listener:
    """One TCP listener: ``host:port``; ``direct_tls`` for XEP-0368 ports."""

    host: str
    port: int
    direct_tls: bool = False


def key(name: str, kind: str, doc: str, example: str | None = None,
        default: str | None = None, **more: Any) -> dict[str, Any]:
    """Field metadata documenting one config key: its TOML ``name`` (dotted), ``kind`` (the
    TOML type), ``doc``, an ``example`` TOML value (default: the field's default) and a
    ``default`` text where the field's default is not a TOML value.  This is the one place a
    key is described: ``xmppd config-reference`` renders docs/CONFIG.md from it, and a test
    keeps that file and from_dict() in step with it."""
    return {"key": name, "kind": kind, "doc": doc, "example": example,
            "default_text": default, **more}


def _limit(default: int | float, doc: str) -> Any:
    """A ``[limits]`` field: a non-negative number."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Limits:
    """Limits on by default; every one is a config key under ``[limits]``."""

    max_stanza_size_bytes: int = _limit(256 * 1024, "largest stanza from an authenticated "
                                        "stream; larger ends it with `policy-violation`")
    max_stanza_size_preauth_bytes: int = _limit(8 * 1024, "largest element before "
                                                "authentication")
    max_depth: int = _limit(64, "deepest element nesting in a stanza")
    max_attrs: int = _limit(64, "most attributes on one element")
    auth_timeout_s: float = _limit(30.0, "time a connection has to authenticate")
    max_auth_failures: int = _limit(3, "failed SASL attempts before the connection is closed")
    # Authenticated sessions are not capped per address (only per account, by
    # max_resources_per_account).
    max_preauth_connections_per_ip: int = _limit(100, "connections from one address that "
                                                 "have not authenticated; at the cap the one "
                                                 "idle longest is closed to make room")
    max_resources_per_account: int = _limit(10, "concurrent sessions per account")
    max_output_buffer_bytes: int = _limit(4 * 1024 * 1024, "unsent output to a peer that "
                                          "does not read before it is cut off")
    # c2s input, token bucket: reading pauses (TCP backpressure) once a client is over its
    # average rate; nothing is dropped.  0 disables it (benchmarks).  See docs/SECURITY.md.
    rate_limit_bytes_per_s: int = _limit(1024 * 1024, "average client input rate; reading "
                                         "pauses above it (0: no limit)")
    rate_limit_burst_bytes: int = _limit(256 * 1024, "input burst allowed above the rate")
    max_offline_messages: int = _limit(1000, "offline messages kept per account")
    # Failed logins: see transport/connections.py AuthThrottle and docs/SECURITY.md.
    auth_backoff_after_failures: int = _limit(5, "failures of one (address, username) "
                                              "before each answer to it is delayed 1 s, 2 s, "
                                              "4 s...")
    auth_backoff_max_s: float = _limit(60.0, "the longest such delay")
    auth_failures_forgotten_after_s: float = _limit(900.0, "an (address, username)'s "
                                                    "failures are forgotten this long after "
                                                    "the last")
    auth_failed_usernames_per_ip_per_min: int = _limit(20, "different usernames failing from "
                                                       "one address within a minute before "
                                                       "logins from it are refused (users "
                                                       "recently logged in from it excepted)")


#: Keys that were renamed when their meaning changed: a config that still uses one gets an
#: error saying what to write instead, rather than a silently different limit.
RENAMED_LIMITS = {
    "max_connections_per_ip": "max_preauth_connections_per_ip (it now counts only "
                              "connections that have not authenticated)",
    "auth_failures_per_ip_per_min": "auth_failed_usernames_per_ip_per_min (it now counts "
                                    "different usernames; guessing one username is slowed "
                                    "down by auth_backoff_after_failures)",
}


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


_LISTEN = 'list of "host:port"'


@dataclass(frozen=True)
class Config:
    domains: tuple[str, ...] = field(default=("localhost",), metadata=key(
        "server.domains", "list of strings", "the domains (virtual hosts) this server serves",
        '["example.org", "example.net"]'))
    data_dir: Path = field(default_factory=default_data_dir, metadata=key(
        "server.data_dir", "path", "database, server secret, generated certificates, "
        "control socket and lock", '"/var/lib/xmppd"',
        default="`$XMPPD_DATA_DIR`, else `$XDG_DATA_HOME/xmppd` (`~/.local/share/xmppd`)"))
    storage: str = field(default="", metadata=key(
        "server.storage", "string", "storage URL: `sqlite:///PATH`, `memory:` (kept nowhere), or "
        "`postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (the `postgresql` extra; query "
        "`pool_min`, `pool_max`: connections kept / at most, default 1 and 10; "
        "`connect_timeout`, `command_timeout`: seconds, default 10 and 60; others go to asyncpg)",
        '"sqlite:///var/lib/xmppd/xmppd.sqlite3"', default="`sqlite:///<data_dir>/xmppd.sqlite3`"))
    log_level: str = field(default="info", metadata=key(
        "server.log_level", "string", "least severe log level written: "
        + ", ".join(LOG_LEVELS), '"warning"', choices=LOG_LEVELS))
    log_format: str = field(default="text", metadata=key(
        "server.log_format", "string", "`text` (one line per record) or `json` (JSON lines: "
        "time, level, logger, message and any extra fields)", '"json"', choices=LOG_FORMATS))
    workers: int = field(default=1, metadata=key(
        "server.workers", "integer ≥ 1", "worker processes sharing the listeners "
        "(SO_REUSEPORT) under a supervisor that restarts a dead one; 1: one process, no "
        "supervisor. `xmppd run --workers N` overrides it; see README \"Workers\" for the "
        "modules that cannot run in several workers yet", "2"))
    drain_timeout_s: float = field(default=60.0, metadata=key(
        "server.drain_timeout_s", "number > 0", "how long a drain (`xmppd drain`, SIGUSR1) "
        "keeps serving the detached stream-management sessions, waiting for their "
        "resumption elsewhere, before it ends them and the process exits", "120"))
    drain_spread_s: float = field(default=5.0, metadata=key(
        "server.drain_spread_s", "number ≥ 0", "a drain asks its clients to go "
        "(`<system-shutdown/>`) spread evenly over this long, not all at once (their "
        "reconnections would hit the other nodes together); at most drain_timeout_s", "10"))
    # [cluster]: nodes on several hosts sharing a Redis (soft state) and a PostgreSQL
    # storage (durable data); see README "Clustering" and xmppd.cluster.redisnode.
    cluster_redis: str = field(default="", metadata=key(
        "cluster.redis", "string", "`redis://HOST:PORT/DB` of the Redis that holds the "
        "cluster's membership and session registry and carries stanzas between nodes; "
        "empty: no cluster", '"redis://10.0.0.9:6379/0"', default="`\"\"` (no cluster)"))
    cluster_node: str = field(default_factory=socket.gethostname, metadata=key(
        "cluster.node", "string", "this node's name, unique in the cluster (letters, digits, "
        "`.`, `-`, `_`)", '"xmpp1"', default="the host name"))
    cluster_heartbeat_s: float = field(default=2.0, metadata=key(
        "cluster.heartbeat_s", "number > 0", "how often a node refreshes its heartbeat key "
        "in Redis", "1"))
    cluster_ttl_s: float = field(default=6.0, metadata=key(
        "cluster.ttl_s", "number > heartbeat_s", "a node whose heartbeat is older than this "
        "is dead: the survivors purge its sessions (detection takes at most ttl_s + "
        "purge_check_s)", "4"))
    cluster_purge_check_s: float = field(default=2.0, metadata=key(
        "cluster.purge_check_s", "number > 0", "how often a node checks its peers' "
        "heartbeats", "1"))
    cluster_allow_local_storage: bool = field(default=False, metadata=key(
        "cluster.allow_local_storage", "boolean", "let a cluster node run on `sqlite` or "
        "`memory:` storage (tests only: the nodes would not share accounts and data)",
        "true"))
    admins: tuple[str, ...] = field(default=(), metadata=key(
        "admins", "list of strings", "bare JIDs of the server's administrators (a top-level "
        "key): they may run the admin ad-hoc commands (XEP-0133) from their clients",
        '["admin@example.org"]', default="(none)"))
    c2s: tuple[Listener, ...] = field(default=(
        Listener("127.0.0.1", 5222),
        Listener("127.0.0.1", 5223, direct_tls=True),
    ), metadata={"keys": [
        key("c2s.listen", _LISTEN, "client listeners (STARTTLS)", '["0.0.0.0:5222"]'),
        key("c2s.direct_tls", _LISTEN, "client listeners, direct TLS (XEP-0368)",
            '["0.0.0.0:5223"]'),
    ]})
    require_encryption: bool = field(default=True, metadata=key(
        "c2s.require_encryption", "boolean", "clients must STARTTLS before authenticating",
        "false"))
    allow_plain: bool = field(default=True, metadata=key(
        "c2s.allow_plain", "boolean", "offer SASL PLAIN (only ever over TLS)", "false"))
    certificates: dict[str, Certificate] = field(default_factory=dict, metadata={"keys": [
        key('certificates."<domain>".cert', "path", "the domain's certificate chain (PEM)",
            '"/etc/xmppd/example.org.crt"', default="a self-signed one generated in "
            "`<data_dir>/certs/`"),
        key('certificates."<domain>".key', "path", "its private key (PEM)",
            '"/etc/xmppd/example.org.key"', default="(generated with the certificate)"),
    ]})
    limits: Limits = field(default_factory=Limits)  # [limits]: see Limits
    # [modules]: checked against the modules' declarations by xmppd.core.manager.plan()
    modules_enabled: tuple[str, ...] | None = field(default=None, metadata=key(
        "modules.enabled", "list of strings", "the modules to load, replacing the default set",
        '["disco", "ping", "message", "roster", "presence"]',
        default="the default set (below)"))
    modules_disabled: tuple[str, ...] = field(default=(), metadata=key(
        "modules.disabled", "list of strings", "modules removed from the (default) set",
        '["time", "version"]'))
    modules_options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata=key(
        "modules.<name>", "table", "a module's options (see Modules below)",
        "{}", default="each option's default"))
    # Federation (server-to-server) and components.
    s2s: tuple[Listener, ...] = field(default=(), metadata={"keys": [
        key("s2s.listen", _LISTEN, "server-to-server listeners (STARTTLS); none: no inbound "
            "federation", '["0.0.0.0:5269"]'),
        key("s2s.direct_tls", _LISTEN, "server-to-server listeners, direct TLS (XEP-0368)",
            '["0.0.0.0:5270"]'),
    ]})
    s2s_require_encryption: bool = field(default=True, metadata=key(
        "s2s.require_encryption", "boolean", "server-to-server streams must use TLS", "false"))
    s2s_routes: dict[str, tuple[str, int]] = field(default_factory=dict, metadata=key(
        's2s.routes."<domain>"', '"host:port"', "static route to a remote domain, instead of "
        "DNS", '"10.0.0.5:5269"', default="(DNS)"))
    s2s_ca_file: Path | None = field(default=None, metadata=key(
        "s2s.ca_file", "path", "CA bundle for peers' certificates; enables inbound SASL "
        "EXTERNAL", '"/etc/ssl/certs/ca-certificates.crt"', default="(none: dialback only)"))
    s2s_require_valid_certificates: tuple[str, ...] = field(default=(), metadata=key(
        "s2s.require_valid_certificates", "list of strings", "remote domains that must "
        "present a valid certificate (no dialback fallback)", '["bank.example"]'))
    s2s_timeout_s: float = field(default=30.0, metadata=key(
        "s2s.timeout_s", "number > 0", "to connect, negotiate and authenticate an outbound "
        "stream", "10"))
    s2s_idle_timeout_s: float = field(default=600.0, metadata=key(
        "s2s.idle_timeout_s", "number > 0", "close server-to-server streams idle this long",
        "300"))
    s2s_max_queue: int = field(default=1000, metadata=key(
        "s2s.max_queue", "integer > 0", "stanzas queued per remote domain while connecting",
        "100"))
    s2s_use_system_ca: bool = field(default=True, metadata=key(
        "s2s.use_system_ca", "boolean", "trust the system CAs for peers' certificates (besides "
        "ca_file)", "false"))
    s2s_dialback: bool = field(default=True, metadata=key(
        "s2s.dialback", "boolean", "server dialback (XEP-0220) both ways; false: certificates "
        "(SASL EXTERNAL) only", "false"))
    s2s_bidi: bool = field(default=True, metadata=key(
        "s2s.bidi", "boolean", "bidirectional server-to-server streams (XEP-0288), offered and "
        "used", "false"))
    s2s_nameservers: tuple[tuple[str, int], ...] = field(default=(), metadata=key(
        "s2s.nameservers", 'list of "ip" / "ip:port" / "[v6]:port"', "DNS servers for "
        "federation lookups", '["127.0.0.1:5353"]', default="(the system's resolv.conf)"))
    s2s_dns_timeout_s: float = field(default=5.0, metadata=key(
        "s2s.dns_timeout_s", "number > 0", "timeout of one federation DNS lookup", "2"))
    components: dict[str, str] = field(default_factory=dict, metadata=key(
        'components."<subdomain>".secret', "string", "shared secret of an XEP-0114 "
        "component", '"change me"', default="(no components)"))
    component_listeners: tuple[Listener, ...] = field(default=(), metadata=key(
        "components.listen", _LISTEN, "component listeners (keep them on loopback)",
        '["127.0.0.1:5347"]'))

    # The HTTP listener (transport/http.py): WebSocket, connection discovery, and what
    # modules register on it (api.add_http_route).
    http: tuple[Listener, ...] = field(default=(
        Listener("127.0.0.1", 5280),
        Listener("127.0.0.1", 5443, direct_tls=True),
    ), metadata={"keys": [
        key("http.listen", _LISTEN, "HTTP listeners (plain; keep them on loopback behind a "
            "TLS-terminating proxy)", '["127.0.0.1:5280"]'),
        key("http.listen_tls", _LISTEN, "HTTPS listeners (the domains' certificates, chosen "
            "by SNI)", '["0.0.0.0:5443"]'),
    ]})
    http_max_header_bytes: int = field(default=16 * 1024, metadata=key(
        "http.max_header_bytes", "integer > 0", "largest request line plus headers; larger "
        "is answered 431 (a longer URL alone: 414)", "8192"))
    http_max_headers: int = field(default=100, metadata=key(
        "http.max_headers", "integer > 0", "most header fields in one request; more is "
        "answered 431", "50"))
    http_max_body_bytes: int = field(default=1024 * 1024, metadata=key(
        "http.max_body_bytes", "integer > 0", "largest request body, unless the endpoint "
        "sets its own (file upload); larger is answered 413", "65536"))
    http_request_timeout_s: float = field(default=30.0, metadata=key(
        "http.request_timeout_s", "number > 0", "time to send a request's headers, and the "
        "longest pause while sending its body; then 408", "10"))
    http_keepalive_timeout_s: float = field(default=60.0, metadata=key(
        "http.keepalive_timeout_s", "number > 0", "an idle keep-alive connection is closed "
        "after this long", "15"))
    http_max_connections_per_ip: int = field(default=100, metadata=key(
        "http.max_connections_per_ip", "integer ≥ 0", "open HTTP connections from one "
        "address (WebSocket connections count as clients instead); more are answered 503 "
        "(0: no limit)", "20"))
    http_external_url: str = field(default="", metadata=key(
        "http.external_url", "string", "the public base URL of the HTTP endpoints, as "
        "announced in connection discovery (XEP-0156); `{host}` is replaced by the domain",
        '"https://{host}"', default="from the request: its scheme, `Host` and listener"))

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.data_dir / 'xmppd.sqlite3'}"

    def certificate_for(self, domain: str) -> Certificate:
        """The configured certificate of ``domain``, or the generated self-signed one."""
        if domain in self.certificates:
            return self.certificates[domain]
        certs = self.data_dir / "certs"
        return Certificate(certs / f"{domain}.crt", certs / f"{domain}.key")

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _nameservers(entries: list) -> tuple[tuple[str, int], ...]:
    """``[s2s] nameservers``: "ip" or "ip:port" ("[v6]:port" for IPv6), port 53 by default."""
    out = []
    for entry in entries:
        text = str(entry)
        host, port = text, "53"
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "53"
        elif text.count(":") == 1:
            host, port = text.split(":")
        try:
            ipaddress.ip_address(host)
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(port)
        except ValueError:
            raise ConfigError(f"s2s.nameservers: {entry!r} is not an IP address[:port]") from None
        out.append((host, int(port)))
    return tuple(out)


def _listeners(value: Any, key: str, direct_tls: bool = False) -> tuple[Listener, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of \"host:port\" strings")
    out = []
    for item in value:
        host, sep, port = str(item).rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"{key}: {item!r} is not host:port")
        out.append(Listener(host.strip("[]") or "0.0.0.0", int(port), direct_tls))
    return tuple(out)


def _take(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.pop(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _number(table: dict[str, Any], key: str, where: str, zero_ok: bool = False) -> float:
    """Pop ``key``: a number above zero (or at least zero, with ``zero_ok``)."""
    value = table.pop(key)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or value < 0 or (value == 0 and not zero_ok)):
        raise ConfigError(f"{where}{key}: expected a {'non-negative' if zero_ok else 'positive'} "
                          "number")
    return float(value)


def from_dict(data: dict[str, Any], base_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed TOML; unknown keys are errors."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    base_dir = base_dir or Path.cwd()
    kw: dict[str, Any] = {}

    def path(p: str) -> Path:
        return (base_dir / os.path.expanduser(p)).resolve()

    server = _table(data, "server")
    if "domains" in server:
        domains = _take(server, "domains", list, "server.")
        if not domains or not all(isinstance(d, str) and d for d in domains):
            raise ConfigError("server.domains must be a non-empty list of domain names")
        kw["domains"] = tuple(_domain(d) for d in domains)
    if "data_dir" in server:
        kw["data_dir"] = path(_take(server, "data_dir", str, "server."))
    if "storage" in server:
        kw["storage"] = _take(server, "storage", str, "server.")
    if "log_level" in server:
        kw["log_level"] = _take(server, "log_level", str, "server.").lower()
        if kw["log_level"] not in LOG_LEVELS:
            raise ConfigError(f"server.log_level must be one of {', '.join(LOG_LEVELS)}")
    if "log_format" in server:
        kw["log_format"] = _take(server, "log_format", str, "server.").lower()
        if kw["log_format"] not in LOG_FORMATS:
            raise ConfigError(f"server.log_format must be one of {', '.join(LOG_FORMATS)}")
    if "workers" in server:
        kw["workers"] = _take(server, "workers", int, "server.")
        if not 1 <= kw["workers"] <= MAX_WORKERS:
            raise ConfigError(f"server.workers: expected 1 to {MAX_WORKERS}, "
                              f"got {kw['workers']}")
    for name, zero_ok in (("drain_timeout_s", False), ("drain_spread_s", True)):
        if name in server:
            kw[name] = _number(server, name, "server.", zero_ok)
    _no_leftovers(server, "server")

    c2s = _table(data, "c2s")
    if "listen" in c2s or "direct_tls" in c2s:
        kw["c2s"] = _listeners(c2s.pop("listen", []), "c2s.listen") + _listeners(
            c2s.pop("direct_tls", []), "c2s.direct_tls", direct_tls=True
        )
    if "require_encryption" in c2s:
        kw["require_encryption"] = _take(c2s, "require_encryption", bool, "c2s.")
    if "allow_plain" in c2s:
        kw["allow_plain"] = _take(c2s, "allow_plain", bool, "c2s.")
    _no_leftovers(c2s, "c2s")

    limits = _table(data, "limits")
    for old, new in RENAMED_LIMITS.items():
        if old in limits:
            raise ConfigError(f"limits.{old} was renamed: use limits.{new}")
    lim_kw = {}
    for f in dataclasses.fields(Limits):
        if f.name in limits:
            kind = float if f.type == "float" else int
            value = limits.pop(f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"limits.{f.name}: expected a non-negative number")
            if kind is int and not float(value).is_integer():
                # int(1.5) would silently truncate a limit the user wrote
                raise ConfigError(f"limits.{f.name}: expected a whole number, got {value!r}")
            lim_kw[f.name] = kind(value)
    _no_leftovers(limits, "limits")
    kw["limits"] = Limits(**lim_kw)

    certs = _table(data, "certificates")
    kw["certificates"] = {}
    for domain, entry in certs.items():
        if (not isinstance(entry, dict) or set(entry) != {"cert", "key"}
                or not all(isinstance(v, str) for v in entry.values())):
            raise ConfigError(f"certificates.{domain} needs exactly 'cert' and 'key' paths")
        kw["certificates"][domain.lower()] = Certificate(path(entry["cert"]), path(entry["key"]))

    modules = _table(data, "modules")
    for key in ("enabled", "disabled"):
        if key in modules:
            names = tuple(_take(modules, key, list, "modules."))
            if not all(isinstance(m, str) for m in names):
                raise ConfigError(f"modules.{key} must be a list of module names")
            kw[f"modules_{key}"] = names
    kw["modules_options"] = {k: modules.pop(k) for k in list(modules) if isinstance(modules[k], dict)}
    _no_leftovers(modules, "modules")  # e.g. a misspelt "disabled" must not pass silently

    s2s = _table(data, "s2s")
    if "listen" in s2s or "direct_tls" in s2s:
        kw["s2s"] = _listeners(s2s.pop("listen", []), "s2s.listen") + _listeners(
            s2s.pop("direct_tls", []), "s2s.direct_tls", direct_tls=True
        )
    for key in ("require_encryption", "use_system_ca", "dialback", "bidi"):
        if key in s2s:
            kw[f"s2s_{key}"] = _take(s2s, key, bool, "s2s.")
    if "nameservers" in s2s:
        kw["s2s_nameservers"] = _nameservers(_take(s2s, "nameservers", list, "s2s."))
    if "ca_file" in s2s:
        kw["s2s_ca_file"] = path(_take(s2s, "ca_file", str, "s2s."))
    if "require_valid_certificates" in s2s:
        kw["s2s_require_valid_certificates"] = tuple(
            _take(s2s, "require_valid_certificates", list, "s2s.")
        )
    for key in ("timeout_s", "idle_timeout_s", "max_queue", "dns_timeout_s"):
        if key in s2s:
            value = _number(s2s, key, "s2s.")
            kw[f"s2s_{key}"] = int(value) if key == "max_queue" else value
    routes = s2s.pop("routes", {})
    kw["s2s_routes"] = {}
    for domain, target in routes.items():
        host, sep, port = str(target).rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"s2s.routes.{domain}: {target!r} is not host:port")
        kw["s2s_routes"][domain.lower()] = (host.strip("[]"), int(port))
    _no_leftovers(s2s, "s2s")

    http = _table(data, "http")
    if "listen" in http or "listen_tls" in http:
        kw["http"] = _listeners(http.pop("listen", []), "http.listen") + _listeners(
            http.pop("listen_tls", []), "http.listen_tls", direct_tls=True
        )
    for key in ("max_header_bytes", "max_headers", "max_body_bytes", "request_timeout_s",
                "keepalive_timeout_s", "max_connections_per_ip"):
        if key in http:
            value = http.pop(key)
            zero_ok = key == "max_connections_per_ip"
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or value < 0 or (value == 0 and not zero_ok)):
                raise ConfigError(f"http.{key}: expected a positive number")
            if not key.endswith("_s"):
                if not float(value).is_integer():
                    raise ConfigError(f"http.{key}: expected a whole number, got {value!r}")
                value = int(value)
            kw[f"http_{key}"] = float(value) if key.endswith("_s") else value
    if "external_url" in http:
        url = _take(http, "external_url", str, "http.").rstrip("/")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"http.external_url: {url!r} must start with http:// or https://")
        kw["http_external_url"] = url
    _no_leftovers(http, "http")

    comps = _table(data, "components")
    if "listen" in comps:
        kw["component_listeners"] = _listeners(comps.pop("listen"), "components.listen")
    kw["components"] = {}
    for name, entry in comps.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("secret"), str):
            raise ConfigError(f"components.{name} needs a 'secret' string")
        kw["components"][name.lower()] = entry["secret"]

    kw.update(_cluster(_table(data, "cluster")))

    if "admins" in data:
        kw["admins"] = _admins(_take(data, "admins", list, ""))
    _no_leftovers(data, "the top level")
    return Config(**kw)


def _cluster(table: dict[str, Any]) -> dict[str, Any]:
    """``[cluster]``: the Redis URL checked (scheme, port, database), times positive and
    the TTL longer than the heartbeat interval."""
    kw: dict[str, Any] = {}
    if "redis" in table:
        url = _take(table, "redis", str, "cluster.")
        if url:
            redis_address(url)  # raises ConfigError
        kw["cluster_redis"] = url
    if "node" in table:
        name = _take(table, "node", str, "cluster.")
        if not name or not all(c.isalnum() or c in ".-_" for c in name):
            raise ConfigError(f"cluster.node: {name!r}: use letters, digits, '.', '-', '_'")
        kw["cluster_node"] = name
    for name in ("heartbeat_s", "ttl_s", "purge_check_s"):
        if name in table:
            kw[f"cluster_{name}"] = _number(table, name, "cluster.")
    if "allow_local_storage" in table:
        kw["cluster_allow_local_storage"] = _take(table, "allow_local_storage", bool,
                                                  "cluster.")
    _no_leftovers(table, "cluster")
    heartbeat = kw.get("cluster_heartbeat_s", 2.0)
    ttl = kw.get("cluster_ttl_s", 6.0)
    if ttl <= heartbeat:
        raise ConfigError(f"cluster.ttl_s ({ttl:g}) must be longer than cluster.heartbeat_s "
                          f"({heartbeat:g}): a live node's heartbeat would expire")
    return kw


def redis_address(url: str) -> tuple[str, int, int]:
    """(host, port, database) of a ``redis://HOST[:PORT][/DB]`` URL; ConfigError if not."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"cluster.redis: {url!r}: {exc}") from None
    if parts.scheme != "redis" or not parts.hostname:
        raise ConfigError(f"cluster.redis: {url!r} is not redis://HOST:PORT/DB")
    if parts.username or parts.password or parts.query:
        raise ConfigError(f"cluster.redis: {url!r}: credentials and options are not "
                          "supported (keep Redis on a private network)")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError(f"cluster.redis: {url!r}: the database must be a number")
    return parts.hostname, port, int(db)


def _admins(entries: list) -> tuple[str, ...]:
    """``admins``: bare JIDs of accounts, normalized."""
    from xmppd.jid import JID, JIDError

    out = []
    for entry in entries:
        try:
            jid = JID(entry) if isinstance(entry, str) else None
        except JIDError as exc:
            raise ConfigError(f"admins: {entry!r} is not a valid JID: {exc}") from None
        if jid is None or jid.localpart is None or jid.resource is not None:
            raise ConfigError(f"admins: {entry!r} is not an account address (user@domain)")
        out.append(str(jid))
    return tuple(dict.fromkeys(out))


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    table = data.pop(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name} must be a table ([{name}]), got {table!r}")
    return table


def _domain(text: str) -> str:
    from xmppd.jid import JID, JIDError

    name = text.lower().rstrip(".")
    try:
        jid = JID(name)
    except JIDError as exc:
        raise ConfigError(f"server.domains: {text!r} is not a valid domain name: {exc}") from None
    if jid.localpart is not None or jid.resource is not None or not name:
        raise ConfigError(f"server.domains: {text!r} is not a valid domain name")
    return jid.domain


def _no_leftovers(table: dict[str, Any], where: str) -> None:
    if table:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(sorted(table))}")


def load(path: str | os.PathLike[str] | None) -> Config:
    """Load the TOML file at ``path``; None gives the built-in defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from None
    return from_dict(data, p.parent.resolve())
