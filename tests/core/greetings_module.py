"""The example module of docs/HACKING.md ("How to write a module"): written only against
its handle, loaded, configured, validated and unloaded by tests/core/test_modules.py.

It greets each new session with a message, at most ``max_per_account`` times per account
(counted in its own key-value store), lets other modules change the text (the fold event
``greetings/text``), and offers how many greetings each session got as the service
``greetings``.
"""

from __future__ import annotations

from typing import Any

from xmppd.core.hooks import STOP
from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.xml.stanza import message

TEXT_EVENT = "greetings/text"  # fold: (text, session) -> text, or STOP for no greeting


class Greetings(Module):
    name = "greetings"
    xeps = ()
    depends = ()
    options = {
        "text": Option(str, "Welcome!", "what new sessions are told"),
        "max_per_account": Option(int, 3, "greet an account this often at most", min=0),
    }

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.store = api.open_store("keyvalue")  # this module's own, in the configured backend
        api.declare(TEXT_EVENT)
        api.provide("greetings", self)
        api.hook("resource-bound", self.bound)

    def bound(self, session: Any) -> None:
        text = self.api.fold(TEXT_EVENT, self.api.options["text"], session)
        if text is STOP or not isinstance(text, str):
            return  # a handler vetoed it (or must wait: a greeting is not worth waiting for)
        self.api.spawn(self.greet(session, text))  # runs now unless the store must wait

    async def greet(self, session: Any, text: str) -> None:
        owner = str(session.bare)
        count = await self.store.get(owner, "count", 0)
        if count >= self.api.options["max_per_account"]:
            return
        await self.store.set(owner, "count", count + 1)
        self.api.state(session, list).append(text)  # per-session state, gone on unload
        session.send(message(session.jid.full, text, **{"from": session.jid.domain}))

    def greeted(self, session: Any) -> list[str]:
        """The greetings ``session`` got (the service other modules call)."""
        return self.api.peek_state(session) or []
