"""What the control socket can ask a running server: status, the online sessions, ending
sessions, a live reload of the configuration, and the account changes the ``xmppd``
command makes while the server runs.

Account deletion runs here, in the server, so that it is done once and completely: the
account's sessions end (``<not-authorized/>``, as Prosody does), modules remove what
depends on the account (``account-deleting``: e.g. its entries in contacts' rosters, with
roster pushes), and the storage deletes the account with every per-module datum.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from xmppd import __version__
from xmppd._impl import implementation
from xmppd.control.server import Command, CommandError
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
    sessions = server.router.sessions
    if jid.resource is not None:
        targets = [s for s in (sessions.get(jid),) if s is not None]
    else:
        targets = sessions.resources(jid)
    for session in targets:
        session.stream_error(condition, text)
    return len(targets)


async def delete_account(server: Server, jid: JID) -> None:
    """Delete a local account completely (see the module docstring)."""
    username, domain = jid.localpart or "", jid.domain
    if domain not in server.router.hosts:
        raise CommandError(f"{domain} is not a domain of this server")
    if not await server.storage.account_exists(username, domain):
        raise CommandError(f"no account {jid}")
    end_sessions(server, jid, "not-authorized", "account deleted")
    await server.hooks.fire("account-deleting", jid)
    await server.storage.delete_account(username, domain)


def commands(server: Server) -> dict[str, Command]:
    """The control commands of ``server``."""
    started = time.time()

    def status() -> dict[str, Any]:
        return {
            "version": __version__,
            "implementation": implementation(),
            "pid": __import__("os").getpid(),
            "uptime_s": round(time.time() - started, 1),
            "domains": list(server.config.domains),
            "sessions": len(server.router.sessions),
            "connections": len(server.streams),
            "modules": sorted(server.modules.loaded),
        }

    def online(domain: str | None = None) -> list[str]:
        return sorted(s.jid.full for s in server.router.sessions.all()
                      if domain is None or s.jid.domain == domain)

    def kick(jid: str, reason: str = "disconnected by the server administrator") -> int:
        return end_sessions(server, _jid(jid), "policy-violation", reason)

    async def deluser(jid: str) -> None:
        await delete_account(server, _jid(jid, account=True))

    def password_changed(jid: str) -> int:
        # Prosody closes the other sessions with <reset/> on a password change.
        return end_sessions(server, _jid(jid, account=True), "reset", "password changed")

    async def reload() -> dict[str, Any]:
        from xmppd.reload import ReloadRefused  # the reload uses the server module

        log.info("reload requested on the control socket")
        try:
            return await server.reload()
        except ReloadRefused as exc:
            log.error("reload refused, the running configuration stays in force: %s", exc)
            raise CommandError(f"configuration refused, the running configuration stays in "
                               f"force: {exc}") from None

    return {"status": status, "online": online, "kick": kick, "deluser": deluser,
            "password-changed": password_changed, "reload": reload}
