"""XEP-0050: Ad-Hoc Commands, the framework: other modules add commands, this module runs
them (sessions, stages, actions, errors) and lists them in service discovery.

A command is added through the service ``adhoc``: ``adhoc.add_command(Command(node, name,
handler, allowed))`` returns the undo (for the adding module's ``api.on_unload``).
``allowed(requester)`` says who may see and run it (:func:`admins_only` for XEP-0133
commands, :func:`local_users` for a user's own); it is checked on every request, so a
requester whose rights went away mid-session is refused too.  ``handler(ctx)`` is a
coroutine function run once per stage: ``ctx.stage`` counts the stages answered before (0:
the first request, which may carry the form already), ``ctx.fields`` holds the submitted
form, ``ctx.data`` the session's own state; it
returns a :class:`Reply` (a form with the actions allowed next, or a completed result), or
raises :class:`CommandFailed`.  ``prev`` is handled here: the previous stage's reply is sent
again.

Only local sessions run commands, on the domain they address.  Sessions are kept in memory,
tied to the requester's full JID and the node (anything else is ``bad-sessionid``); they
expire after ``session_timeout_s`` (then ``session-expired``), end with their requester's
session, and are capped per requester (``max_sessions_per_user``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.jid import JID
from xmppd.modules._forms import DATA_NS, submitted
from xmppd.xml.element import Element
from xmppd.xml.stanza import StanzaError, error_reply, reply

COMMANDS_NS = "http://jabber.org/protocol/commands"
ACTIONS = ("execute", "cancel", "prev", "next", "complete")

log = logging.getLogger("xmppd.modules.adhoc")


class CommandFailed(StanzaError):
    """A stanza error, with the XEP-0050 application condition ``app`` (``bad-payload``,
    ``bad-action``, ``bad-sessionid``, ``malformed-action``, ``session-expired``...)."""

    def __init__(self, condition: str, app: str | None = None, text: str | None = None) -> None:
        super().__init__(condition, text)
        self.app = app

    def reply(self, iq: Element) -> Element:
        out = error_reply(iq, self.condition, self.type, self.text)
        if self.app:
            err = out.find("error")
            # RFC 6120 §8.3.2: the defined condition, its <text/>, then the application one
            err.append(Element(self.app, COMMANDS_NS, {}, []))
        return out


def bad_payload(text: str) -> CommandFailed:
    """The submitted form is missing or wrong (the session stays at its stage)."""
    return CommandFailed("bad-request", "bad-payload", text)


@dataclass
class Reply:
    """What one stage answers: a ``form`` (or result form) and ``notes`` ((type, text),
    type info/warn/error); ``actions`` allowed next (empty: the command is completed) with
    ``default`` the one ``execute`` means."""

    form: Element | None = None
    notes: list[tuple[str, str]] = field(default_factory=list)
    actions: tuple[str, ...] = ()
    default: str | None = None

    @property
    def completed(self) -> bool:
        return not self.actions


def done(text: str | None = None, form: Element | None = None, note: str = "info") -> Reply:
    """A completed command's reply, with a note."""
    return Reply(form=form, notes=[(note, text)] if text else [])


def ask(form: Element, *, last: bool = True, back: bool = False) -> Reply:
    """A form to fill in: ``last``: submitting it completes the command (else ``next``
    leads to another stage); ``back``: ``prev`` is allowed."""
    actions = ("complete",) if last else ("next",)
    if back:
        actions = ("prev", *actions)
    return Reply(form=form, actions=actions, default=actions[-1])


@dataclass
class Context:
    """One request of a command session, for its handler."""

    requester: JID
    domain: str
    stage: int = 0
    action: str = "execute"
    fields: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def value(self, var: str) -> str:
        """The single value of a submitted field ("" when absent)."""
        values = self.fields.get(var) or []
        if len(values) > 1:
            raise bad_payload(f"field {var!r} takes one value")
        return values[0] if values else ""

    def values(self, var: str) -> list[str]:
        return [v for v in self.fields.get(var) or [] if v]


Handler = Callable[[Context], Awaitable[Reply]]


@dataclass(frozen=True)
class Command:
    """An ad-hoc command: its ``node``, human ``name``, ``handler`` and who is ``allowed``."""

    node: str
    name: str
    handler: Handler
    allowed: Callable[[JID], bool]


@dataclass
class _Session:
    id: str
    node: str
    requester: JID
    ctx: Context
    deadline: float
    history: list[Reply] = field(default_factory=list)  # the reply of each stage so far


def local_users(api: ModuleAPI) -> Callable[[JID], bool]:
    """Any user of a served domain."""
    return lambda jid: jid.domain in api.hosts and jid.localpart is not None


def admins_only(api: ModuleAPI) -> Callable[[JID], bool]:
    """The configured ``admins`` (on a local session)."""
    return lambda jid: jid.domain in api.hosts and api.is_admin(jid)


class AdHoc(Module):
    """Runs the commands other modules add; provides the service ``adhoc``."""

    name = "adhoc"
    workers_safe = True
    xeps = ("XEP-0050",)
    depends = ("disco",)
    options = {
        "session_timeout_s": Option(float, 600.0, "a command session unused this long expires",
                                    min=1),
        "max_sessions_per_user": Option(int, 5, "command sessions open at once per full JID; "
                                        "more are refused with resource-constraint", min=1),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.commands: dict[str, Command] = {}
        self.sessions: dict[str, _Session] = {}
        api.provide("adhoc", self)
        api.add_feature(COMMANDS_NS)
        api.iq_handler("set", COMMANDS_NS, "command", self.command)
        api.hook("session-closed", self.session_closed)
        api.on_unload(api.service("disco").add_node_provider(self))
        api.every(60.0, self.expire)

    # -- the service ---------------------------------------------------------------------------

    def add_command(self, command: Command) -> Callable[[], None]:
        """Offer ``command``; returns the undo."""
        if command.node in self.commands:
            raise KeyError(f"ad-hoc command {command.node!r} exists already")
        self.commands[command.node] = command

        def undo() -> None:
            if self.commands.get(command.node) is command:
                del self.commands[command.node]
                for sid in [s.id for s in self.sessions.values() if s.node == command.node]:
                    del self.sessions[sid]

        return undo

    # -- disco ---------------------------------------------------------------------------------

    def _requester(self, origin: Any) -> JID | None:
        return getattr(origin, "jid", None)

    def node_items(self, node: str, origin: Any, domain: str) -> list | None:
        if node != COMMANDS_NS:
            return None
        requester = self._requester(origin)
        if requester is None:
            return []
        return [(domain, c.node, c.name) for c in sorted(self.commands.values(),
                                                           key=lambda c: c.node)
                if c.allowed(requester)]

    def node_info(self, node: str, origin: Any, domain: str) -> tuple | None:
        if node == COMMANDS_NS:
            return [("automation", "command-list", "Commands")], {COMMANDS_NS}
        command = self.commands.get(node)
        if command is None:
            return None
        requester = self._requester(origin)
        if requester is None or not command.allowed(requester):
            raise StanzaError("forbidden")
        return [("automation", "command-node", command.name)], {COMMANDS_NS, DATA_NS}

    # -- running commands ------------------------------------------------------------------------

    async def command(self, iq: Element, origin: Any, payload: Element) -> Element:
        try:
            return await self._run(iq, origin, payload)
        except CommandFailed as exc:
            return exc.reply(iq)

    async def _run(self, iq: Element, origin: Any, payload: Element) -> Element:
        requester = self._requester(origin)
        node = payload.get("node") or ""
        action = payload.get("action") or "execute"
        if action not in ACTIONS:
            raise CommandFailed("bad-request", "malformed-action", f"unknown action {action!r}")
        command = self.commands.get(node)
        if command is None:
            raise CommandFailed("item-not-found", text=f"no command {node!r}")
        if requester is None or not command.allowed(requester):
            raise CommandFailed("forbidden", text="you may not run this command")
        to = JID(iq.get("to")).domain if iq.get("to") else requester.domain
        sid = payload.get("sessionid")
        form = payload.find("x", DATA_NS)
        if sid is None:
            if action != "execute":
                raise CommandFailed("bad-request", "bad-sessionid", "no session to continue")
            session = self._new_session(command, requester, to)
            return await self._stage(iq, command, session, "execute", form)
        session = self._session(sid, node, requester)
        if action == "cancel":
            del self.sessions[session.id]
            return self._element(iq, command, session, None, status="canceled")
        last = session.history[-1]
        if action == "execute":
            action = last.default or "complete"
        if action not in last.actions or (action == "prev" and len(session.history) < 2):
            raise CommandFailed("bad-request", "bad-action",
                                f"{action} is not allowed now ({', '.join(last.actions)})")
        if action == "prev":
            session.history.pop()
            session.ctx.stage -= 1
            session.deadline = self._deadline()
            return self._element(iq, command, session, session.history[-1])
        return await self._stage(iq, command, session, action, form)

    def _new_session(self, command: Command, requester: JID, domain: str) -> _Session:
        limit = self.api.options["max_sessions_per_user"]
        if sum(1 for s in self.sessions.values() if s.requester == requester) >= limit:
            self.api.count_limit("modules.adhoc.max_sessions_per_user")
            log.info("limit max_sessions_per_user (%d) reached for %s: command %s refused",
                     limit, requester, command.node)
            raise CommandFailed("resource-constraint", text="too many command sessions open")
        sid = secrets.token_urlsafe(12)
        return _Session(sid, command.node, requester, Context(requester, domain),
                        self._deadline())

    def _session(self, sid: str, node: str, requester: JID) -> _Session:
        session = self.sessions.get(sid)
        # another requester's session looks like no session at all
        if session is None or session.node != node or session.requester != requester:
            raise CommandFailed("bad-request", "bad-sessionid", "unknown session")
        if session.deadline < time.monotonic():
            del self.sessions[sid]
            raise CommandFailed("not-allowed", "session-expired", "the session expired")
        return session

    async def _stage(self, iq: Element, command: Command, session: _Session, action: str,
                     form: Element | None) -> Element:
        ctx = session.ctx
        try:
            ctx.fields = submitted(form)
        except StanzaError as exc:
            raise bad_payload(exc.text or "bad form") from None
        ctx.action = action
        try:
            result = await command.handler(ctx)
        except CommandFailed as exc:
            if exc.app != "bad-payload":  # a wrong form can be sent again; else it is over
                self.sessions.pop(session.id, None)
            raise
        except StanzaError as exc:
            self.sessions.pop(session.id, None)
            raise CommandFailed(exc.condition, text=exc.text) from None
        ctx.stage += 1
        if result.completed:
            self.sessions.pop(session.id, None)
            return self._element(iq, command, session, result, status="completed")
        session.history.append(result)
        session.deadline = self._deadline()
        self.sessions[session.id] = session
        return self._element(iq, command, session, result)

    def _element(self, iq: Element, command: Command, session: _Session, result: Reply | None,
                 status: str = "executing") -> Element:
        out = reply(iq)
        el = out.subelement("command", COMMANDS_NS, {
            "node": command.node, "sessionid": session.id, "status": status})
        if result is None:
            return out
        if result.actions:
            actions = el.subelement("actions", COMMANDS_NS,
                                    {"execute": result.default} if result.default else {})
            for name in result.actions:
                actions.subelement(name, COMMANDS_NS)
        for kind, text in result.notes:
            el.subelement("note", COMMANDS_NS, {"type": kind}, text=text)
        if result.form is not None:
            el.append(result.form)
        return out

    def _deadline(self) -> float:
        return time.monotonic() + self.api.options["session_timeout_s"]

    # -- housekeeping ----------------------------------------------------------------------------

    def session_closed(self, session: Any, abrupt: bool) -> None:
        if self.sessions:
            jid = session.jid
            for sid in [s.id for s in self.sessions.values() if s.requester == jid]:
                del self.sessions[sid]

    def expire(self) -> None:
        # kept one more timeout after expiring, to be answered session-expired meanwhile
        now = time.monotonic() - self.api.options["session_timeout_s"]
        for sid in [s.id for s in self.sessions.values() if s.deadline < now]:
            del self.sessions[sid]


__all__ = ["COMMANDS_NS", "AdHoc", "Command", "CommandFailed", "Context", "Reply",
           "admins_only", "ask", "bad_payload", "done", "local_users"]
