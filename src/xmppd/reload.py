"""Live reload (``xmppd reload``, SIGHUP): read the configuration file again, validate it
as start-up does, apply what can change while the server runs, and report the rest.

Nothing is applied unless all of the new configuration is valid (the same checks as
``xmppd run``: the file and its keys, ``[modules]`` against the modules' declarations,
the certificates): a refused reload leaves the running configuration in force.  Applied
live: the log level and format, the virtual hosts (sessions of a removed one end with
``<host-gone/>``), the certificates (read again even when their paths did not change, so
that a renewed certificate is used: by new handshakes only), ``[limits]`` and the client
settings (by new connections; account-wide ones at once), and the modules (enabled,
disabled, options: see :meth:`xmppd.core.manager.ModuleManager.reconcile`).  Every other
key (listen addresses, storage, data directory, ``[s2s]``, ``[components]``, and any key
added later that is not in :data:`LIVE_FIELDS`) keeps its running value and is reported
as needing a restart.  No session of a domain that stays is ended.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xmppd import logs
from xmppd.core.config import Config, ConfigError, Limits, load
from xmppd.core.manager import Planned, plan
from xmppd.preflight import certificate_problems, describe_error
from xmppd.server import TLSSet, build_tls

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger(__name__)

#: The :class:`Config` fields a reload applies; any other field that changed needs a restart.
LIVE_FIELDS = frozenset({
    "domains", "log_level", "log_format", "require_encryption", "allow_plain",
    "certificates", "limits", "modules_enabled", "modules_disabled", "modules_options",
    "drain_timeout_s", "drain_spread_s",  # read when a drain starts
})


class ReloadRefused(Exception):
    """The new configuration is invalid; nothing was applied (the text says why)."""


@dataclass
class ReloadResult:
    """What a reload applied, what waits for a restart, what failed, and warnings."""

    config: str
    applied: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def key_names(f: dataclasses.Field) -> str:
    """The config key(s) of a :class:`Config` field, as the reference names them."""
    meta = f.metadata
    if "keys" in meta:
        return ", ".join(k["key"] for k in meta["keys"])
    return meta.get("key", f.name)


def restart_needed(old: Config, new: Config) -> list[str]:
    """One line per changed key that a reload does not apply (values are not shown: a
    storage URL or a component secret does not belong in a log)."""
    return [f"{key_names(f)}: changed; needs a restart (the running value stays in force)"
            for f in dataclasses.fields(Config)
            if f.name not in LIVE_FIELDS and getattr(old, f.name) != getattr(new, f.name)]


def in_force(old: Config, new: Config) -> Config:
    """``new`` with the running values of the keys that need a restart: the configuration
    the server runs after the reload (a later reload reports them again)."""
    return new.replace(**{f.name: getattr(old, f.name) for f in dataclasses.fields(Config)
                          if f.name not in LIVE_FIELDS})


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _limit_changes(old: Limits, new: Limits) -> list[str]:
    return [f"limits.{f.name}: {_toml(getattr(old, f.name))} -> {_toml(getattr(new, f.name))}"
            for f in dataclasses.fields(Limits) if getattr(old, f.name) != getattr(new, f.name)]


def _read(server: Server) -> Config:
    try:
        return load(server.config_path)
    except ConfigError as exc:
        raise ReloadRefused(str(exc)) from None


async def reload(server: Server, new: Config | None = None) -> ReloadResult:
    """Validate ``new`` (default: the server's configuration file read again), then apply
    it to ``server``; ReloadRefused (nothing applied) when it is invalid."""
    old = server.config
    new = _read(server) if new is None else new
    result = ReloadResult(str(server.config_path or "(defaults: no configuration file)"))
    result.restart = restart_needed(old, new)
    config = in_force(old, new)
    planned, tls = _validate(config, result)
    _check_workers(server, planned)

    # Valid: from here on, apply.
    server.config = config
    _apply_logging(old, config, result)
    added, removed = _apply_domains(server, old, config, result)
    for domain in server.install_tls(tls):
        if domain in old.domains:
            result.applied.append(f"certificates.{domain}: new certificate (SHA-256 "
                                  f"{tls.fingerprints[domain]}) for new connections")
    _apply_client_settings(server, old, config, result)
    if added or removed:  # before modules load: those get every domain at load
        await server.hooks.fire("hosts-changed", tuple(added), tuple(removed))
    await _apply_modules(server, planned, result)
    await server.hooks.fire("config-reloaded", old, config)
    _log(result)
    return result


def _check_workers(server: Server, planned: list[Planned]) -> None:
    """With workers, a reload may not enable what they cannot run (or a module that moves
    the HTTP listeners to worker 0: that needs a restart)."""
    if server.worker is None or server.worker[1] < 2:
        return
    unsafe = [p.cls.name for p in planned if not p.cls.workers_safe]
    if unsafe:
        raise ReloadRefused(f"these modules cannot run in several workers yet: "
                            f"{', '.join(unsafe)}")
    moving = [p.cls.name for p in planned if p.cls.http_in_one_worker
              and p.cls.name not in server.modules.loaded]
    if moving:
        raise ReloadRefused(f"enabling {', '.join(moving)} with workers needs a restart "
                            "(only worker 0 serves HTTP then)")


def _validate(config: Config, result: ReloadResult) -> tuple[list[Planned], TLSSet]:
    """The checks of ``xmppd run``; ReloadRefused with the first problems found."""
    try:
        planned = plan(config)
    except ConfigError as exc:
        raise ReloadRefused(str(exc)) from None
    errors, warnings = certificate_problems(config)
    if errors:
        raise ReloadRefused("; ".join(errors))
    result.warnings += [f"certificate for {w}" for w in warnings]
    try:
        tls = build_tls(config)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ReloadRefused(describe_error(exc) if isinstance(exc, OSError) else str(exc)) from None
    return planned, tls


def _apply_domains(server: Server, old: Config, new: Config,
                   result: ReloadResult) -> tuple[list[str], list[str]]:
    """Serve the new domain list; the (added, removed) domains."""
    removed = [d for d in old.domains if d not in new.domains]
    added = [d for d in new.domains if d not in old.domains]
    if old.domains == new.domains:
        return added, removed
    server.router.set_hosts(new.domains)
    changes = []
    if added:
        changes.append(f"added {', '.join(added)}")
    if removed:
        ended = _end_sessions_of(server, removed)
        changes.append(f"removed {', '.join(removed)} ({ended} session(s) ended with host-gone)")
    if old.domains[0] != new.domains[0]:
        # clients that name no domain, and TLS without SNI, get the new one now
        changes.append(f"default domain {new.domains[0]} (was {old.domains[0]})")
        result.restart.append("server.domains: the first (default) domain changed; "
                              "components and federation use the new one after a restart")
        server.renew_client_policy()
    if changes:
        result.applied.append(f"server.domains: {'; '.join(changes)}")
    return added, removed


async def _apply_modules(server: Server, planned: list[Planned], result: ReloadResult) -> None:
    before = set(server.hooks.handlers("server-started"))
    done = server.modules.reconcile(planned)
    result.applied += done.applied
    result.restart += done.restart
    result.failed += done.failed
    # Modules loaded now missed server-started (e.g. opening their listeners): they get it.
    for handler in server.hooks.handlers("server-started"):
        if handler in before:
            continue
        try:
            outcome = handler(server)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            log.exception("reload: starting %r failed", handler)
            result.failed.append(f"starting a newly loaded module failed: {exc}")


def _apply_logging(old: Config, new: Config, result: ReloadResult) -> None:
    if (old.log_level, old.log_format) == (new.log_level, new.log_format):
        return
    if logs.setup(new.log_level, new.log_format) is None:
        # as at start: a program that configured logging itself keeps its configuration
        result.warnings.append("server.log_level, server.log_format: not applied (logging "
                               "is configured by the program that runs the server)")
        return
    for name in ("log_level", "log_format"):
        if getattr(old, name) != getattr(new, name):
            result.applied.append(f"server.{name}: {getattr(old, name)} -> {getattr(new, name)}")


def _end_sessions_of(server: Server, domains: list[str]) -> int:
    """End the sessions of removed domains (``<host-gone/>``, RFC 6120 §4.9.3.5: the
    domain is no longer serviced here); how many."""
    gone = set(domains)
    sessions = [s for s in server.router.sessions.all() if s.jid.domain in gone]
    for session in sessions:
        session.stream_error("host-gone", "this domain is no longer served here")
    return len(sessions)


def _apply_client_settings(server: Server, old: Config, new: Config,
                           result: ReloadResult) -> None:
    changes = _limit_changes(old.limits, new.limits)
    for name, key in (("require_encryption", "c2s.require_encryption"),
                      ("allow_plain", "c2s.allow_plain")):
        if getattr(old, name) != getattr(new, name):
            changes.append(f"{key}: {_toml(getattr(old, name))} -> {_toml(getattr(new, name))}")
    if old.limits != new.limits:
        server.connections.max_preauth_per_ip = new.limits.max_preauth_connections_per_ip
        server.auth_throttle.apply_limits(new.limits)
    if changes:
        server.renew_client_policy()
    result.applied += [f"{change} (new connections; account limits at once)"
                       if change.startswith("limits.") else f"{change} (new connections)"
                       for change in changes]


def _log(result: ReloadResult) -> None:
    for line in result.applied:
        log.info("reload: %s", line)
    for line in result.restart:
        log.warning("reload: %s", line)
    for line in result.warnings:
        log.warning("reload: %s", line)
    for line in result.failed:
        log.error("reload: %s", line)
    log.info("configuration reloaded from %s: %d change(s) applied, %d need a restart%s",
             result.config, len(result.applied), len(result.restart),
             f", {len(result.failed)} failed" if result.failed else "")
