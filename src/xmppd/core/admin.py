"""What an administrator does to accounts and sessions, done one way whoever asks: the
``xmppd`` command (through the control socket) and the admin modules (XEP-0133 ad-hoc
commands, XEP-0077 account removal) call these, so an account deleted from a client is
deleted exactly as ``xmppd deluser`` deletes it.

Account deletion: the account's sessions end (``<not-authorized/>``, as Prosody does),
modules remove what depends on the account (the core event ``account-deleting``: e.g. its
entries in contacts' rosters, with roster pushes), and the storage deletes the account with
every per-module datum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xmppd.xml.stanza import message

if TYPE_CHECKING:
    from xmppd.core.hooks import Hooks
    from xmppd.core.router import Router
    from xmppd.jid import JID


class AccountError(Exception):
    """An administrative action refused (no such account, not a local domain...); the text
    says why, for the operator or the admin's client."""


def end_sessions(router: Router, jid: JID, condition: str, text: str) -> int:
    """End the sessions of ``jid`` (all of an account's for a bare JID) with the stream
    error ``condition``; how many."""
    sessions = router.sessions
    if jid.resource is not None:
        targets = [s for s in (sessions.get(jid),) if s is not None]
    else:
        targets = sessions.resources(jid)
    for session in targets:
        session.stream_error(condition, text)
    return len(targets)


async def delete_account(router: Router, hooks: Hooks, storage: Any, jid: JID) -> None:
    """Delete the local account ``jid`` (bare) completely (see the module docstring)."""
    username, domain = jid.localpart or "", jid.domain
    if domain not in router.hosts:
        raise AccountError(f"{domain} is not a domain of this server")
    if not username or not await storage.account_exists(username, domain):
        raise AccountError(f"no account {jid}")
    end_sessions(router, jid, "not-authorized", "account deleted")
    await hooks.fire("account-deleting", jid)
    await storage.delete_account(username, domain)


async def set_disabled(router: Router, storage: Any, jid: JID, disabled: bool) -> None:
    """Disable (or re-enable) the local account ``jid``: a disabled account keeps its data
    but cannot log in (SASL ``account-disabled``); its sessions end now."""
    username, domain = jid.localpart or "", jid.domain
    if domain not in router.hosts:
        raise AccountError(f"{domain} is not a domain of this server")
    if not username or not await storage.set_disabled(username, domain, disabled):
        raise AccountError(f"no account {jid}")
    if disabled:
        end_sessions(router, jid, "not-authorized", "account disabled")


def announce(router: Router, domain: str, body: str, subject: str | None = None) -> int:
    """Send ``body`` (a headline message from ``domain``) to every online session of
    ``domain``; how many were sent one."""
    if domain not in router.hosts:
        raise AccountError(f"{domain} is not a domain of this server")
    sent = 0
    for session in list(router.sessions.all()):
        if session.jid.domain != domain:
            continue
        msg = message(session.jid.full, body, type="headline", **{"from": domain})
        if subject:
            msg.subelement("subject", text=subject)
        router.route_from_server(msg)
        sent += 1
    return sent
