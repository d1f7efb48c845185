"""What the control socket can ask a running server: status, the online sessions, ending
sessions, announcements, invitations, a live reload of the configuration, and the
account changes the ``xmppd`` command makes while the server runs.

Account deletion runs in the server, so that it is done once and completely, the same way
as from an admin's client (:mod:`xmppd.core.admin`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from xmppd import __version__
from xmppd._impl import implementation
from xmppd.control.server import Command, CommandError
from xmppd.core import admin
from xmppd.jid import JID, JIDError

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger(__name__)


def _jid(text: str, *, account: bool = False) -> JID:
    try:
        jid = JID(text)
    except (JIDError, TypeError) as exc:
        raise CommandError(f"{text!r} is not a JID: {exc}") from None
    if account and (jid.localpart is None or jid.resource is not None):
        raise CommandError(f"{text!r} is not an account address (user@domain)")
    return jid


def end_sessions(server: Server, jid: JID, condition: str, text: str) -> int:
    """End the sessions of ``jid`` (all of an account's for a bare JID); how many."""
    return admin.end_sessions(server.router, jid, condition, text)


async def delete_account(server: Server, jid: JID) -> None:
    """Delete a local account completely (:func:`xmppd.core.admin.delete_account`)."""
    try:
        await admin.delete_account(server.router, server.hooks, server.storage, jid)
    except admin.AccountError as exc:
        raise CommandError(str(exc)) from None


def commands(server: Server) -> dict[str, Command]:
    """The control commands of ``server``."""
    started = time.time()

    def status() -> dict[str, Any]:
        return {
            "version": __version__,
            "implementation": implementation(),
            "pid": os.getpid(),
            "uptime_s": round(time.time() - started, 1),
            "domains": list(server.config.domains),
            "sessions": len(server.router.sessions),
            "connections": len(server.streams),
            "modules": sorted(server.modules.loaded),
            **({} if server.draining is None else {"draining": server.draining.status()}),
            **({} if server.node is None
               else {"cluster" if server.config.cluster_redis else "workers":
                     server.node.status()}),
        }

    def online(domain: str | None = None) -> list[str]:
        return sorted(s.jid.full for s in server.router.sessions.all()
                      if domain is None or s.jid.domain == domain)

    def workers() -> dict[str, list[str]]:
        """The full JIDs bound on each worker (with several workers)."""
        if server.node is None or server.worker is None:
            raise CommandError("this server runs one process (server.workers = 1)")
        sessions_by_node = getattr(server.node, "sessions_by_node", None)
        if sessions_by_node is not None:  # each worker is a cluster member "<node>/<i>"
            prefix = server.config.cluster_node + "/"
            return {name[len(prefix):]: jids for name, jids in sessions_by_node().items()
                    if name.startswith(prefix)}
        out: dict[str, list[str]] = {str(w): [] for w in range(server.node.count)}
        for session in server.router.sessions.all():
            where = getattr(session, "worker", server.node.me)
            out[str(where)].append(session.jid.full)
        return {w: sorted(jids) for w, jids in out.items()}

    def cluster() -> dict[str, Any]:
        """This node's view of the cluster: each node's full JIDs (``cluster.redis``)."""
        sessions_by_node = getattr(server.node, "sessions_by_node", None)
        if sessions_by_node is None:
            raise CommandError("no cluster configured (cluster.redis is empty)")
        return {"node": server.config.cluster_node, "epoch": server.node.me,
                "nodes": sessions_by_node()}

    def kick(jid: str, reason: str = "disconnected by the server administrator") -> int:
        return end_sessions(server, _jid(jid), "policy-violation", reason)

    async def deluser(jid: str) -> None:
        await delete_account(server, _jid(jid, account=True))

    def password_changed(jid: str) -> int:
        # Prosody closes the other sessions with <reset/> on a password change.
        return end_sessions(server, _jid(jid, account=True), "reset", "password changed")

    def announce(text: str, domain: str | None = None, subject: str | None = None) -> int:
        if not isinstance(text, str) or not text.strip():
            raise CommandError("an announcement needs a text")
        domains = [domain] if domain else list(server.config.domains)
        try:
            return sum(admin.announce(server.router, d, text, subject) for d in domains)
        except admin.AccountError as exc:
            raise CommandError(str(exc)) from None

    async def invite(domain: str | None = None, expires_s: float | None = None) -> dict:
        return await create_invite(server, domain, expires_s)

    async def reload() -> dict[str, Any]:
        from xmppd.reload import ReloadRefused  # the reload uses the server module

        log.info("reload requested on the control socket")
        try:
            result = await server.reload()
        except ReloadRefused as exc:
            log.error("reload refused, the running configuration stays in force: %s", exc)
            raise CommandError(f"configuration refused, the running configuration stays in "
                               f"force: {exc}") from None
        if server.node is not None:  # the other workers read the file too
            server.node.broadcast_control("reload", {})
        return result

    def drain(timeout_s: float | None = None, spread_s: float | None = None) -> dict[str, Any]:
        """Start a graceful drain (:mod:`xmppd.drain`); with workers, of every worker."""
        for name, value in (("timeout_s", timeout_s), ("spread_s", spread_s)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float)) or value < 0
                                      or (name == "timeout_s" and value == 0)):
                raise CommandError(f"drain: {name} must be a positive number of seconds")
        if server.worker is not None and server.node is not None and server.draining is None:
            args = {"timeout_s": timeout_s, "spread_s": spread_s}
            server.node.broadcast_control("drain", args)
            supervisor = os.getppid()
            if supervisor > 1:  # it restarts no worker from now on and exits after the last
                os.kill(supervisor, signal.SIGUSR2)
        log.warning("drain requested on the control socket")
        return server.drain(timeout_s, spread_s).status()

    return {"status": status, "online": online, "drain": drain, "kick": kick, "deluser": deluser,
            "password-changed": password_changed, "announce": announce, "invite": invite,
            "reload": reload, "workers": workers, "cluster": cluster}


async def create_invite(server: Server, domain: str | None, expires_s: float | None) -> dict:
    """A registration invitation from the ``register`` module (its service ``register``):
    ``{"token", "uri", "domain", "expires"}``."""
    service = server.services.get("register")
    if service is None:
        raise CommandError("the register module is not enabled")
    domain = domain or server.config.domains[0]
    if domain not in server.router.hosts:
        raise CommandError(f"{domain} is not a domain of this server")
    try:
        return await service.create_invite(domain, expires_s)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
