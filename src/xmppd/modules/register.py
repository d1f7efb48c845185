"""XEP-0077: In-Band Registration, with XEP-0445 invitation tokens (XEP-0401-style invites).

Account creation before authentication is off by default (``allow_registration``); when on,
it is offered (the stream feature ``<register xmlns='http://jabber.org/features/iq-register'/>``)
only where SASL is (after STARTTLS when encryption is required), takes the legacy
``<username/>`` and ``<password/>`` fields, and is limited per address
(``max_registrations_per_ip`` accounts per ``registration_window_s``).  With
``require_invite`` a client must first present a valid token (``<preauth
xmlns='urn:xmpp:pars:0' token='...'/>``, XEP-0445; feature ``urn:xmpp:ibr-token:0``); a
token is checked for expiry there and used up only by the registration it allows.  Tokens
come from ``xmppd invite`` or from the admins' ad-hoc command
``urn:xmpp:invite#create-account`` (service ``register``: :meth:`Register.create_invite`).

Once logged in, a user may change the password (``allow_password_change``; the account's
other sessions end with ``<reset/>``) and remove the account (``allow_account_removal``;
removed the way ``xmppd deluser`` removes it), through ``jabber:iq:register`` or, for the
password, the ad-hoc command ``change-password``.

Passwords users choose must be valid PRECIS OpaqueStrings of at least
``min_password_length`` characters with at least 4 different characters, and must not be the
username or the account's address (in any case).  Only SCRAM keys are stored.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from typing import Any

from xmppd.c2s.sasl import derive_all, normalize_username, prepare_password
from xmppd.core.admin import AccountError
from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID
from xmppd.modules._forms import Field, data_form
from xmppd.modules.adhoc import Command, Context, Reply, admins_only, ask, bad_payload, done
from xmppd.storage import AccountExists
from xmppd.transport.connections import address_text
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, error_reply, reply

REGISTER_NS = "jabber:iq:register"
FEATURE_NS = "http://jabber.org/features/iq-register"
TOKEN_FEATURE_NS = "urn:xmpp:ibr-token:0"
PARS_NS = "urn:xmpp:pars:0"
INVITE_NODE = "urn:xmpp:invite#create-account"
CHANGE_PASSWORD_NODE = "change-password"
MIN_DISTINCT = 4


def password_problem(password: str, username: str, domain: str, min_length: int) -> str | None:
    """Why a password a user chose is refused, or None (the rule: module docstring)."""
    try:
        prepare_password(password)
    except ValueError as exc:
        return str(exc)
    if len(password) < min_length:
        return f"the password must have at least {min_length} characters"
    if len(set(password)) < MIN_DISTINCT:
        return f"the password must have at least {MIN_DISTINCT} different characters"
    folded = password.casefold()
    if folded in (username.casefold(), f"{username}@{domain}".casefold()):
        return "the password must not be the username"
    return None


def _iq_error(iq: Element, condition: str, text: str | None = None,
              type: str | None = None) -> Element:
    out = error_reply(iq, condition, type, text)
    out.attrs.pop("to", None)  # before authentication the client has no address
    return out


class Register(Module):
    """In-band registration, password change and removal; invitations."""

    name = "register"
    workers_safe = True
    xeps = ("XEP-0077", "XEP-0445", "XEP-0401")
    soft_depends = ("adhoc",)
    options = {
        "allow_registration": Option(bool, False, "let clients create accounts in-band "
                                     "(after TLS, like authentication)"),
        "require_invite": Option(bool, False, "in-band registration needs an invitation "
                                 "token (`xmppd invite`, or the admins' ad-hoc command)"),
        "max_registrations_per_ip": Option(int, 3, "accounts one address may register per "
                                           "registration_window_s (0: no limit)", min=0),
        "registration_window_s": Option(float, 3600.0, "the window of "
                                        "max_registrations_per_ip", min=1),
        "min_password_length": Option(int, 8, "the shortest password a user may choose",
                                      min=1, max=1024),
        "invite_expiry_s": Option(float, 7 * 86400.0, "how long an invitation token is "
                                  "valid unless its creator says otherwise", min=1),
        "allow_password_change": Option(bool, True, "users may change their password"),
        "allow_account_removal": Option(bool, True, "users may delete their own account"),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.store = api.open_store("keyvalue")  # owner: the domain; key: an invite token
        self.recent: dict[str, deque[float]] = {}  # address -> registration times
        api.provide("register", self)
        api.iq_handler("get", REGISTER_NS, "query", self.get, to="host")
        api.iq_handler("get", REGISTER_NS, "query", self.get, to="bare")
        api.iq_handler("set", REGISTER_NS, "query", self.set, to="host")
        api.iq_handler("set", REGISTER_NS, "query", self.set, to="bare")
        api.add_feature(REGISTER_NS)
        api.every(api.options["registration_window_s"], self.forget)
        api.every(3600.0, self.expire_invites)
        adhoc = api.service("adhoc")
        if adhoc is not None:
            api.on_unload(adhoc.add_command(Command(
                INVITE_NODE, "Create an invitation to register", self.invite_command,
                admins_only(api))))
            if api.options["allow_password_change"]:
                api.on_unload(adhoc.add_command(Command(
                    CHANGE_PASSWORD_NODE, "Change your password", self.password_command,
                    lambda jid: jid.domain in api.hosts and jid.localpart is not None)))

    # -- invitations ------------------------------------------------------------------------------

    async def create_invite(self, domain: str, expires_s: float | None = None,
                            by: str = "") -> dict[str, Any]:
        """A new single-use token for registering on ``domain``: ``{"token", "uri",
        "domain", "expires"}`` (``expires``: Unix time)."""
        if domain not in self.api.hosts:
            raise ValueError(f"{domain} is not a domain of this server")
        lifetime = self.api.options["invite_expiry_s"] if expires_s is None else expires_s
        if not lifetime or lifetime <= 0:
            raise ValueError("an invitation must expire after a positive time")
        token = secrets.token_urlsafe(18)
        expires = time.time() + float(lifetime)
        await self.store.set(domain, token, {"expires": expires, "by": by,
                                             "created": time.time()})
        self.api.log.info("invitation created for %s (expires in %ds) by %s", domain,
                          lifetime, by or "the operator")
        return {"token": token, "uri": f"xmpp:{domain}?register;preauth={token}",
                "domain": domain, "expires": expires}

    async def valid_invite(self, domain: str, token: str) -> bool:
        if not token or len(token) > 128:
            return False
        try:
            entry = await self.store.get(domain, token)
        except ValueError:  # not a key the store accepts: no such token
            return False
        if not isinstance(entry, dict):
            return False
        if entry.get("expires", 0) < time.time():
            await self.store.delete(domain, token)
            return False
        return True

    async def expire_invites(self) -> None:
        """Forget the tokens that expired unused (hourly)."""
        now = time.time()
        for domain in await self.store.owners():
            for token, entry in (await self.store.items(domain)).items():
                if not isinstance(entry, dict) or entry.get("expires", 0) < now:
                    await self.store.delete(domain, token)

    async def invite_command(self, ctx: Context) -> Reply:
        invite = await self.create_invite(ctx.domain, by=str(ctx.requester.bare))
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(invite["expires"]))
        return done(form=data_form(None, [
            Field("uri", "text-single", "Invitation URI", values=(invite["uri"],)),
            Field("token", "text-single", "Token", values=(invite["token"],)),
            Field("expire", "text-single", "Valid until", values=(expires,)),
        ], type="result"))

    # -- before authentication (the c2s negotiation calls these) ----------------------------------

    def preauth_features(self, domain: str | None) -> tuple[str, ...]:
        """The registration stream features to offer."""
        if not self.api.options["allow_registration"]:
            return ()
        return (TOKEN_FEATURE_NS, FEATURE_NS)

    def handles(self, iq: Element) -> bool:
        """An IQ before authentication that is ours to answer."""
        kids = list(iq.elements())
        return len(kids) == 1 and (kids[0].ns == REGISTER_NS and kids[0].name == "query"
                                   or kids[0].ns == PARS_NS and kids[0].name == "preauth")

    def preauth_iq(self, neg: Any, iq: Element) -> Any:
        """Answer a registration IQ of a client that has not authenticated."""
        io = neg.io
        if iq.get("type") not in ("get", "set") or "id" not in iq.attrs:
            return None  # results and errors from a client that has no account: ignored
        if not self.api.options["allow_registration"]:
            io.send(_iq_error(iq, "service-unavailable", "in-band registration is disabled"))
            return None
        if not neg.secure and neg.policy.require_encryption:
            io.send(_iq_error(iq, "policy-violation", "STARTTLS first"))
            return None
        return self._preauth(neg, iq)

    async def _preauth(self, neg: Any, iq: Element) -> None:
        io = neg.io
        payload = next(iq.elements())
        domain = neg.domain or neg.policy.default_domain
        try:
            if payload.ns == PARS_NS:
                if iq.get("type") != "set":
                    raise StanzaError("bad-request")
                token = payload.get("token") or ""
                if not await self.valid_invite(domain, token):
                    raise StanzaError("item-not-found", "the token is invalid or expired")
                neg.preauth = token
                out = reply(iq)
            elif iq.get("type") == "get":
                out = self.form(iq)
            else:
                await self.register(neg, iq, payload, domain)
                out = reply(iq)
        except StanzaError as exc:
            out = _iq_error(iq, exc.condition, exc.text, exc.type)
        out.attrs.pop("to", None)
        io.send(out)

    def form(self, iq: Element) -> Element:
        out = reply(iq)
        query = out.subelement("query", REGISTER_NS)
        query.subelement("instructions", text="Choose a username and a password.")
        query.subelement("username")
        query.subelement("password")
        return out

    async def register(self, neg: Any, iq: Element, payload: Element, domain: str) -> None:
        """Create the account a registration set asks for (StanzaError if refused)."""
        options = self.api.options
        if payload.find("remove", REGISTER_NS) is not None:
            raise StanzaError("not-authorized", "log in to remove an account")
        raw_user = (payload.findtext("username", REGISTER_NS) or "").strip()
        password = payload.findtext("password", REGISTER_NS) or ""
        if not raw_user or not password:
            raise StanzaError("not-acceptable", "a username and a password are required")
        try:
            username = normalize_username(raw_user)
            JID(f"{username}@{domain}")
        except (ValueError, TypeError):
            raise StanzaError("not-acceptable", "the username is not valid") from None
        problem = password_problem(password, username, domain, options["min_password_length"])
        if problem:
            raise StanzaError("not-acceptable", problem)
        token = neg.preauth
        if options["require_invite"] and token is None:
            raise StanzaError("forbidden", "registration needs an invitation")
        address = neg.io.peer[0] if neg.io.peer else "-"
        if not self.allowed(address):
            self.api.count_limit("modules.register.max_registrations_per_ip")
            self.api.log.info("limit max_registrations_per_ip (%d) reached for %s: "
                              "registration refused", options["max_registrations_per_ip"],
                              address_text(neg.io.peer))
            raise StanzaError("policy-violation", "too many registrations from your address, "
                              "try later", "wait")
        if await self.api.storage.account_exists(username, domain):
            raise StanzaError("conflict", "the username is taken")
        if token is not None and not await self.store.delete(domain, token):
            neg.preauth = None
            raise StanzaError("forbidden", "the invitation was used meanwhile")
        creds = await asyncio.to_thread(derive_all, password)
        try:
            await self.api.storage.create_account(username, domain, creds)
        except AccountExists:
            raise StanzaError("conflict", "the username is taken") from None
        neg.preauth = None
        self.recent.setdefault(address, deque()).append(time.monotonic())
        self.api.log.info("account %s@%s registered in-band from %s%s", username, domain,
                          address_text(neg.io.peer), " with an invitation" if token else "")

    def allowed(self, address: str) -> bool:
        """This address may register one more account now."""
        limit = self.api.options["max_registrations_per_ip"]
        if not limit:
            return True
        times = self.recent.get(address)
        if times is None:
            return True
        horizon = time.monotonic() - self.api.options["registration_window_s"]
        while times and times[0] < horizon:
            times.popleft()
        return len(times) < limit

    def forget(self) -> None:
        horizon = time.monotonic() - self.api.options["registration_window_s"]
        for address in [a for a, t in self.recent.items() if not t or t[-1] < horizon]:
            del self.recent[address]

    # -- logged in: the account's own registration ------------------------------------------------

    def _own(self, iq: Element, origin: Any) -> JID:
        jid = getattr(origin, "jid", None)
        if jid is None:
            raise StanzaError("forbidden")
        to = iq.get("to")
        if to is not None and to not in (jid.domain, str(jid.bare)):
            raise StanzaError("service-unavailable")
        return jid

    def get(self, iq: Element, origin: Any, payload: Element) -> Element:
        jid = self._own(iq, origin)
        out = reply(iq)
        query = out.subelement("query", REGISTER_NS)
        query.subelement("registered")
        query.subelement("username", text=jid.localpart)
        return out

    async def set(self, iq: Element, origin: Any, payload: Element) -> Element | None:
        jid = self._own(iq, origin)
        options = self.api.options
        if payload.find("remove", REGISTER_NS) is not None:
            if not options["allow_account_removal"]:
                raise StanzaError("not-allowed", "account removal is disabled here")
            # the answer first: the account's sessions end with its deletion
            self.api.send(reply(iq))
            try:
                await self.api.delete_account(jid)
            except AccountError as exc:
                self.api.log.warning("removing %s failed: %s", jid.bare, exc)
                return None
            self.api.log.info("account %s removed by its user", jid.bare)
            return None
        username = (payload.findtext("username", REGISTER_NS) or "").strip()
        password = payload.findtext("password", REGISTER_NS)
        if password is None:
            raise StanzaError("bad-request", "a password (or <remove/>) is required")
        if not options["allow_password_change"]:
            raise StanzaError("not-allowed", "password changes are disabled here")
        try:
            same = normalize_username(username) == jid.localpart if username else True
        except ValueError:
            same = False
        if not same:
            raise StanzaError("not-allowed", "you can only change your own password")
        await self.change_password(jid, password, origin)
        return reply(iq)

    async def change_password(self, jid: JID, password: str, origin: Any) -> None:
        """Set ``jid``'s account's password (StanzaError not-acceptable if too weak)."""
        problem = password_problem(password, jid.localpart or "", jid.domain,
                                   self.api.options["min_password_length"])
        if problem:
            raise StanzaError("not-acceptable", problem)
        creds = await asyncio.to_thread(derive_all, password)
        if not await self.api.storage.set_credentials(jid.localpart, jid.domain, creds):
            raise StanzaError("item-not-found")
        # Prosody too ends the other sessions on a password change
        for session in list(self.api.router.sessions.resources(jid.bare)):
            if session is not origin:
                session.stream_error("reset", "password changed")
        self.api.log.info("password of %s changed by its user", jid.bare)

    async def password_command(self, ctx: Context) -> Reply:
        if ctx.stage == 0 and not ctx.fields:
            return ask(data_form(None, [
                Field("password", "text-private", "New password", required=True),
                Field("password-verify", "text-private", "Retype it", required=True)],
                title="Changing your password"))
        password = ctx.value("password")
        if not password or password != ctx.value("password-verify"):
            raise bad_payload("the passwords differ")
        origin = self.api.router.sessions.get(ctx.requester)
        try:
            await self.change_password(ctx.requester, password, origin)
        except StanzaError as exc:
            raise bad_payload(exc.text or exc.condition) from None
        return done("password changed")


__all__ = ["Register", "password_problem"]
