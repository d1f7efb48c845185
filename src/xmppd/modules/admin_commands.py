"""XEP-0133: Service Administration, as ad-hoc commands (XEP-0050, the ``adhoc`` module) for
the server's ``admins`` (a top-level config key).

Commands (node ``http://jabber.org/protocol/admin#<name>``): ``add-user``, ``delete-user``
(two stages: the accounts, then a confirmation; ``prev`` goes back), ``disable-user``,
``reenable-user``, ``end-user-session``, ``change-user-password``,
``get-online-users-list``, ``get-online-users-num``, ``get-registered-users-num``,
``announce``, ``set-motd``, ``edit-motd``, ``delete-motd``.  They act on the domain the
command is sent to for counts, lists, announcements and the message of the day, and on any
served domain's accounts.  Deleting goes the way ``xmppd deluser`` goes (every module's data
removed); a disabled account keeps its data and fails SASL with ``account-disabled``.
Passwords an admin sets are only checked to be valid (PRECIS); the strength rules are the
``register`` module's, for the passwords users choose.

The message of the day (one per domain, kept in this module's store) is sent to each
session with its initial presence (once per session, as Prosody's mod_motd does).
"""

from __future__ import annotations

import asyncio
from typing import Any

from xmppd.c2s.sasl import derive_all, normalize_username, prepare_password
from xmppd.core.admin import AccountError
from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID, jid_or_none
from xmppd.modules._forms import Field, data_form
from xmppd.modules.adhoc import (
    Command,
    CommandFailed,
    Context,
    Reply,
    admins_only,
    ask,
    bad_payload,
    done,
)
from xmppd.storage import AccountExists
from xmppd.xml.stanza import message

ADMIN_NS = "http://jabber.org/protocol/admin"
MAX_ITEMS = ("25", "50", "75", "100", "150", "200", "none")


def _jids(text: str) -> Field:
    return Field("accountjids", "jid-multi", text, required=True)


def _account_field(label: str = "The Jabber ID of the account") -> Field:
    return Field("accountjid", "jid-single", label, required=True)


def _password_fields() -> list[Field]:
    return [Field("password", "text-private", "The password", required=True),
            Field("password-verify", "text-private", "Retype the password", required=True)]


class AdminCommands(Module):
    """The XEP-0133 commands; the message of the day."""

    name = "admin_commands"
    xeps = ("XEP-0133",)
    depends = ("adhoc",)
    soft_depends = ("presence",)
    workers_safe = True  # the message of the day cache: ModuleAPI.changed

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.store = api.open_store("keyvalue")
        self.motds: dict[str, str | None] = {}  # domain -> text (None: none), a cache
        self.generation = 0  # changes heard of from other workers (a read in flight is stale)
        api.on_changed(self.motd_changed)
        adhoc = api.service("adhoc")
        admin = admins_only(api)
        for name, label, handler in (
            ("add-user", "Add a user", self.add_user),
            ("delete-user", "Delete users", self.delete_user),
            ("disable-user", "Disable users", self.disable_user),
            ("reenable-user", "Re-enable users", self.reenable_user),
            ("end-user-session", "End user sessions", self.end_user_session),
            ("change-user-password", "Change a user's password", self.change_user_password),
            ("get-online-users-list", "Get the list of online users", self.online_list),
            ("get-online-users-num", "Get the number of online users", self.online_num),
            ("get-registered-users-num", "Get the number of registered users",
             self.registered_num),
            ("announce", "Send an announcement to all online users", self.announce),
            ("set-motd", "Set the message of the day", self.set_motd),
            ("edit-motd", "Edit the message of the day", self.edit_motd),
            ("delete-motd", "Delete the message of the day", self.delete_motd),
        ):
            api.on_unload(adhoc.add_command(Command(f"{ADMIN_NS}#{name}", label, handler, admin)))
        if api.service("presence") is not None:
            api.hook("presence/available", self.available)

    # -- helpers -------------------------------------------------------------------------------

    def account(self, text: str, *, full: bool = False) -> JID:
        """A local account's JID from a form value (a full JID too with ``full``)."""
        jid = jid_or_none(text.strip())
        if jid is None or jid.localpart is None or (jid.resource is not None and not full):
            raise bad_payload(f"{text!r} is not an account address (user@domain)")
        if jid.domain not in self.api.hosts:
            raise bad_payload(f"{jid.domain} is not a domain of this server")
        try:
            normalize_username(jid.localpart)
        except ValueError:
            raise bad_payload(f"{text!r} is not a valid username") from None
        return jid

    def accounts(self, ctx: Context, *, full: bool = False) -> list[JID]:
        values = ctx.values("accountjids")
        if not values:
            raise bad_payload("no account given")
        return [self.account(v, full=full) for v in values]

    @staticmethod
    def password(ctx: Context) -> str:
        password = ctx.value("password")
        if not password:
            raise bad_payload("no password given")
        if "password-verify" in ctx.fields and ctx.value("password-verify") != password:
            raise bad_payload("the passwords differ")
        try:
            prepare_password(password)
        except ValueError as exc:
            raise bad_payload(str(exc)) from None
        return password

    # -- accounts --------------------------------------------------------------------------------

    async def add_user(self, ctx: Context) -> Reply:
        if ctx.stage == 0 and not ctx.fields:
            return ask(data_form(ADMIN_NS, [_account_field(), *_password_fields()],
                                 title="Adding a user"))
        jid = self.account(ctx.value("accountjid"))
        creds = await asyncio.to_thread(derive_all, self.password(ctx))
        try:
            await self.api.storage.create_account(jid.localpart, jid.domain, creds)
        except AccountExists:
            raise CommandFailed("conflict", text=f"{jid} exists already") from None
        self.api.log.info("account %s created by %s", jid, ctx.requester.bare)
        return done(f"created {jid}")

    async def delete_user(self, ctx: Context) -> Reply:
        if ctx.stage == 0 and not ctx.fields:
            return ask(data_form(ADMIN_NS, [_jids("The accounts to delete")],
                                 title="Deleting users"), last=False)
        if ctx.stage <= 1:  # the accounts: with the first request, or after the form
            jids = self.accounts(ctx)
            for jid in jids:
                if not await self.api.storage.account_exists(jid.localpart, jid.domain):
                    raise bad_payload(f"no account {jid}")
            ctx.data["jids"] = [str(j) for j in jids]
            form = data_form(ADMIN_NS, [
                Field("accountjids", "jid-multi", "These accounts and all their data will be "
                      "deleted", values=tuple(ctx.data["jids"])),
                Field("confirm", "boolean", "Delete them", required=True),
            ], title="Confirm the deletion")
            return ask(form, back=ctx.stage == 1)
        if ctx.value("confirm") not in ("1", "true"):
            return done("nothing deleted")
        deleted = []
        for text in ctx.data["jids"]:
            try:
                await self.api.delete_account(JID(text))
            except AccountError as exc:
                return done(f"{exc} (deleted: {', '.join(deleted) or 'none'})", note="error")
            deleted.append(text)
            self.api.log.info("account %s deleted by %s", text, ctx.requester.bare)
        return done(f"deleted {', '.join(deleted)}")

    async def _set_disabled(self, ctx: Context, disabled: bool) -> Reply:
        what = "disable" if disabled else "re-enable"
        if ctx.stage == 0 and not ctx.fields:
            return ask(data_form(ADMIN_NS, [_jids(f"The accounts to {what}")]))
        jids = self.accounts(ctx)
        for jid in jids:
            try:
                await self.api.set_disabled(jid, disabled)
            except AccountError as exc:
                raise CommandFailed("item-not-found", text=str(exc)) from None
            self.api.log.info("account %s %sd by %s", jid, what, ctx.requester.bare)
        return done(f"{what}d {', '.join(map(str, jids))}")

    async def disable_user(self, ctx: Context) -> Reply:
        return await self._set_disabled(ctx, True)

    async def reenable_user(self, ctx: Context) -> Reply:
        return await self._set_disabled(ctx, False)

    async def end_user_session(self, ctx: Context) -> Reply:
        if ctx.stage == 0 and not ctx.fields:
            return ask(data_form(ADMIN_NS, [_jids(
                "The sessions to end (an account's all for user@domain)")]))
        ended = sum(self.api.end_sessions(jid, "policy-violation",
                                          "disconnected by the server administrator")
                    for jid in self.accounts(ctx, full=True))
        return done(f"ended {ended} session(s)")

    async def change_user_password(self, ctx: Context) -> Reply:
        if ctx.stage == 0 and not ctx.fields:
            return ask(data_form(ADMIN_NS, [_account_field(), Field(
                "password", "text-private", "The new password", required=True)]))
        jid = self.account(ctx.value("accountjid"))
        creds = await asyncio.to_thread(derive_all, self.password(ctx))
        if not await self.api.storage.set_credentials(jid.localpart, jid.domain, creds):
            raise CommandFailed("item-not-found", text=f"no account {jid}")
        self.api.log.info("password of %s changed by %s", jid, ctx.requester.bare)
        return done(f"password of {jid} changed")

    # -- numbers and lists ---------------------------------------------------------------------

    def online_accounts(self, domain: str) -> list[str]:
        return sorted({str(s.bare) for s in self.api.router.sessions.all()
                       if s.jid.domain == domain})

    async def online_list(self, ctx: Context) -> Reply:
        if ctx.stage == 0 and not ctx.fields:
            return ask(data_form(ADMIN_NS, [Field(
                "max_items", "list-single", "Maximum number of items to show",
                values=("100",), options=tuple((v, v) for v in MAX_ITEMS))]))
        limit = ctx.value("max_items") or "none"
        if limit not in MAX_ITEMS:
            raise bad_payload(f"max_items must be one of {', '.join(MAX_ITEMS)}")
        jids = self.online_accounts(ctx.domain)
        if limit != "none":
            jids = jids[:int(limit)]
        return done(form=data_form(ADMIN_NS, [Field(
            "onlineuserjids", "jid-multi", "The list of all online users", values=tuple(jids))],
            type="result"))

    async def online_num(self, ctx: Context) -> Reply:
        count = len(self.online_accounts(ctx.domain))
        return done(form=data_form(ADMIN_NS, [Field(
            "onlineusersnum", "text-single", "The number of online users",
            values=(str(count),))], type="result"))

    async def registered_num(self, ctx: Context) -> Reply:
        count = len(await self.api.storage.list_accounts(ctx.domain))
        return done(form=data_form(ADMIN_NS, [Field(
            "registeredusersnum", "text-single", "The number of registered users",
            values=(str(count),))], type="result"))

    # -- announcements and the message of the day ------------------------------------------------

    async def announce(self, ctx: Context) -> Reply:
        if ctx.stage == 0 and not ctx.fields:
            return ask(data_form(ADMIN_NS, [
                Field("subject", "text-single", "Subject"),
                Field("body", "text-multi", "Message body", required=True)],
                title="Making an announcement"))
        body = "\n".join(ctx.fields.get("body") or []).strip()
        if not body:
            raise bad_payload("no message body given")
        sent = self.api.announce(ctx.domain, body, ctx.value("subject") or None)
        self.api.log.info("announcement to %s by %s: %d session(s)", ctx.domain,
                          ctx.requester.bare, sent)
        return done(f"sent to {sent} session(s)")

    async def motd(self, domain: str) -> str | None:
        if domain in self.motds:
            return self.motds[domain]
        generation = self.generation
        text = await self.store.get(domain, "motd")
        if generation == self.generation:  # no change heard of while reading
            self.motds[domain] = text
        return text

    def motd_changed(self, domain: str, key: str) -> None:
        """Another worker set or deleted ``domain``'s message of the day."""
        self.generation += 1
        self.motds.pop(domain, None)

    async def _motd_form(self, ctx: Context, current: bool) -> Reply:
        if ctx.stage == 0 and not ctx.fields:
            text = await self.motd(ctx.domain) if current else None
            lines = tuple(text.split("\n")) if text else ()
            return ask(data_form(ADMIN_NS, [Field(
                "motd", "text-multi", "Message of the day", values=lines, required=True)]))
        text = "\n".join(ctx.fields.get("motd") or []).strip()
        if not text:
            raise bad_payload("no message given")
        await self.store.set(ctx.domain, "motd", text)
        self.motds[ctx.domain] = text
        await self.api.changed(ctx.domain, "motd")
        return done("message of the day set")

    async def set_motd(self, ctx: Context) -> Reply:
        return await self._motd_form(ctx, current=False)

    async def edit_motd(self, ctx: Context) -> Reply:
        return await self._motd_form(ctx, current=True)

    async def delete_motd(self, ctx: Context) -> Reply:
        await self.store.delete(ctx.domain, "motd")
        self.motds[ctx.domain] = None
        await self.api.changed(ctx.domain, "motd")
        return done("message of the day deleted")

    async def available(self, session: Any, initial: bool) -> None:
        if not initial:
            return
        domain = session.jid.domain
        text = self.motds[domain] if domain in self.motds else await self.motd(domain)
        if text:
            self.api.send(message(session.jid.full, text, type="normal", **{"from": domain}))
