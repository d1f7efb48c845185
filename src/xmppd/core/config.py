"""The server configuration: frozen dataclasses loaded from TOML, with working defaults.

Units are in the names (``_s`` seconds, ``_bytes`` bytes).  With no file at all, xmppd serves
``localhost`` on loopback, keeps its data in ``$XDG_DATA_HOME/xmppd`` (or ``~/.local/share``),
and generates a self-signed certificate there on first start.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


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


@dataclass(frozen=True)
class Limits:
    """Limits on by default; every one is a config key under ``[limits]``."""

    max_stanza_size_bytes: int = 256 * 1024
    max_stanza_size_preauth_bytes: int = 8 * 1024
    max_depth: int = 64
    max_attrs: int = 64
    auth_timeout_s: float = 30.0
    max_auth_failures: int = 3
    # Connections from one address that have not authenticated yet; at the cap, the one
    # idle longest is closed to make room.  Authenticated sessions are not capped per
    # address (only per account, by max_resources_per_account).
    max_preauth_connections_per_ip: int = 100
    max_resources_per_account: int = 10
    max_output_buffer_bytes: int = 4 * 1024 * 1024
    # c2s input, token bucket: reading pauses (TCP backpressure) once a client is over its
    # average rate; nothing is dropped.  0 disables it (benchmarks).  See docs/SECURITY.md.
    rate_limit_bytes_per_s: int = 1024 * 1024
    rate_limit_burst_bytes: int = 256 * 1024
    max_offline_messages: int = 1000
    # Failed logins (see transport/connections.py AuthThrottle and docs/SECURITY.md): after
    # this many failures of one (address, username), each answer to it is delayed 1 s, 2 s,
    # 4 s... up to auth_backoff_max_s; its failures are forgotten this long after the last.
    auth_backoff_after_failures: int = 5
    auth_backoff_max_s: float = 60.0
    auth_failures_forgotten_after_s: float = 900.0
    # Password spraying: this many different usernames failing from one address within a
    # minute, and logins from it are refused (except for users recently logged in from it).
    auth_failed_usernames_per_ip_per_min: int = 20


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


@dataclass(frozen=True)
class Config:
    domains: tuple[str, ...] = ("localhost",)
    data_dir: Path = field(default_factory=default_data_dir)
    c2s: tuple[Listener, ...] = (
        Listener("127.0.0.1", 5222),
        Listener("127.0.0.1", 5223, direct_tls=True),
    )
    require_encryption: bool = True
    allow_plain: bool = True  # PLAIN is only ever offered over TLS
    storage: str = ""  # default: sqlite in data_dir
    certificates: dict[str, Certificate] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    # [modules]: checked against the modules' declarations by xmppd.core.manager.plan()
    modules_enabled: tuple[str, ...] | None = None  # None: the default set
    modules_disabled: tuple[str, ...] = ()
    modules_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Federation (server-to-server) and components.
    s2s: tuple[Listener, ...] = ()
    s2s_require_encryption: bool = True
    s2s_routes: dict[str, tuple[str, int]] = field(default_factory=dict)
    s2s_ca_file: Path | None = None
    s2s_require_valid_certificates: tuple[str, ...] = ()
    s2s_timeout_s: float = 30.0  # connect + negotiate + authenticate an outbound stream
    s2s_idle_timeout_s: float = 600.0  # close s2s streams without traffic for this long
    s2s_max_queue: int = 1000  # stanzas queued per remote domain while connecting
    s2s_use_system_ca: bool = True  # trust the system CAs for peer certificates (+ ca_file)
    s2s_dialback: bool = True  # XEP-0220 both ways (False: certificates / EXTERNAL only)
    s2s_bidi: bool = True  # XEP-0288 bidirectional streams, offered and used
    s2s_nameservers: tuple[tuple[str, int], ...] = ()  # DNS servers for s2s (else resolv.conf)
    s2s_dns_timeout_s: float = 5.0
    components: dict[str, str] = field(default_factory=dict)  # subdomain -> shared secret
    component_listeners: tuple[Listener, ...] = ()
    log_level: str = "info"

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
            value = s2s.pop(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"s2s.{key}: expected a positive number")
            kw[f"s2s_{key}"] = int(value) if key == "max_queue" else float(value)
    routes = s2s.pop("routes", {})
    kw["s2s_routes"] = {}
    for domain, target in routes.items():
        host, sep, port = str(target).rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"s2s.routes.{domain}: {target!r} is not host:port")
        kw["s2s_routes"][domain.lower()] = (host.strip("[]"), int(port))
    _no_leftovers(s2s, "s2s")

    comps = _table(data, "components")
    if "listen" in comps:
        kw["component_listeners"] = _listeners(comps.pop("listen"), "components.listen")
    kw["components"] = {}
    for name, entry in comps.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("secret"), str):
            raise ConfigError(f"components.{name} needs a 'secret' string")
        kw["components"][name.lower()] = entry["secret"]

    _no_leftovers(data, "the top level")
    return Config(**kw)


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
