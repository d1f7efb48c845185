"""XEP-0352: Client State Indication — hold back what an inactive client need not see now.

The feature ``<csi xmlns='urn:xmpp:csi:0'/>`` is offered after authentication; a bound
client then sends ``<inactive/>`` (screen off, app in the background) and ``<active/>``
(the nonzas come through the core event ``stream/element``).  The model is Prosody's
mod_csi_simple, with the coalescing of mod_csi_battery_saver:

- *Held* while inactive: presence updates (available, unavailable) and chat-state-only
  messages (XEP-0085, no body).  Only the latest presence per sender full JID is kept, and
  only the latest chat state per conversation (sender full JID and thread): a superseded
  one is dropped, the newer one takes its place at the end of the queue.
- *Important*, delivered at once: everything else (messages with a body or any other
  payload, IQs, subscription requests, errors).  What is held is flushed first, so the
  client sees everything in the order the server routed it (minus superseded entries).
- The queue is flushed, in order, when the client becomes active again, when it holds
  more than ``max_held`` entries, and when the module unloads.

Per-session state exists only while a session is inactive (``<active/>`` drops it): the
``stanza/inbound`` cost for every other session is one state lookup.
"""

from __future__ import annotations

from typing import Any

from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import Interest, ModuleAPI
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS

CSI_NS = "urn:xmpp:csi:0"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
#: Payloads that ride along with a chat state without making the message important:
#: processing hints (XEP-0334) and stanza/origin ids (XEP-0359).  A <thread/> is part of
#: the conversation key.
_COMPANION_NS = frozenset({"urn:xmpp:hints", "urn:xmpp:sid:0"})


def hold_key(stanza: Element) -> tuple[str, ...] | None:
    """The key under which an inactive session holds ``stanza`` (a newer stanza with the
    same key supersedes it), or None: the stanza is important and goes out at once."""
    name = stanza.name
    stype = stanza.attrs.get("type")
    sender = stanza.attrs.get("from", "")
    if name == "presence":
        # available/unavailable updates wait; subscriptions, probes and errors do not
        return ("presence", sender) if stype is None or stype == "unavailable" else None
    if name != "message" or stype == "error":
        return None
    state = False
    thread = ""
    for child in stanza.elements():
        ns = child.ns
        if ns == CHATSTATES_NS:
            state = True
        elif ns == CLIENT_NS and child.name == "thread":
            thread = child.text
        elif ns not in _COMPANION_NS:
            return None  # a body, a subject, a receipt, a marker, an encrypted payload...
    return ("chatstate", sender, thread) if state else None


#: The state of an inactive session: what it holds, key -> stanza in the order of the
#: latest arrival; or, until the first stanza is held (most inactive sessions of an idle
#: server hold none), this one shared empty tuple instead of an object per session.
Held = dict[tuple[str, ...], Element]
NOTHING_HELD: tuple[()] = ()


class ClientStateIndication(Module):
    """Holds presence updates and chat states back from inactive clients."""

    name = "csi"
    workers_safe = True
    stateful = True  # inactive sessions and what they hold
    xeps = ("XEP-0352",)
    options = {
        "max_held": Option(
            int, 100, "flush an inactive session's queue when it holds more than this many "
            "stanzas (presence updates, chat states)", min=0),
    }

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        self.max_held = api.options["max_held"]
        return True

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.max_held = api.options["max_held"]
        api.hook("stream-features", self.features)
        api.hook("stream/element", self.element)
        # after filters such as blocking (priority 100): only what will really be sent waits
        # Skipped by the router for an account with no inactive session (quiet: set at
        # bind and at <active/>, ended by <inactive/> creating the state).
        api.hook("stanza/inbound", self.inbound, priority=-100, interest=Interest(account=True))
        api.hook("resource-bound", lambda session: api.quiet_without_state(session.bare))
        api.on_unload(self.flush_all)  # runs first on unload: nothing held is lost
        api.on_handover(self.export, self.restore)

    @staticmethod
    def features(session: Any, feats: Element) -> None:
        feats.subelement("csi", CSI_NS)

    def element(self, stream: Any, el: Element) -> bool:
        session = getattr(stream, "session", None)
        if el.ns != CSI_NS or session is None:  # CSI is about a bound session
            return False
        if el.name == "inactive":
            self.api.state(session, tuple)  # NOTHING_HELD, unless something is held
            return True
        if el.name == "active":
            self.flush(session)
            return True
        return False

    def inbound(self, stanza: Element, session: Any) -> bool:
        held = self.api.peek_state(session)
        if held is None:  # active: the common case
            return False
        key = hold_key(stanza)
        if key is None:
            if held:
                self.api.set_state(session, NOTHING_HELD)
                self._send_held(session, held)
            return False  # the router sends it, after what was held
        if not held:
            held = {}
            self.api.set_state(session, held)
        held.pop(key, None)  # a superseded entry goes; the new one queues at the end
        held[key] = stanza
        if len(held) > self.max_held:
            self.api.set_state(session, NOTHING_HELD)
            self._send_held(session, held)
        return True

    def export(self, session: Any) -> bool | None:
        """A session moves to another process (stream management resumes it there): what
        it holds goes into its queue first; whether it is inactive."""
        if self.api.peek_state(session) is None:
            return None
        self.flush(session)
        return True

    def restore(self, session: Any, value: Any) -> None:
        self.api.state(session, tuple)

    # -- flushing ----------------------------------------------------------------------------

    def flush(self, session: Any) -> None:
        """Send what ``session`` holds and make it active again (no state left)."""
        held = self.api.peek_state(session)
        if held is not None:
            self.api.drop_state(session)
            self.api.quiet_without_state(session.bare)
            self._send_held(session, held)

    def flush_all(self) -> None:
        for session in self.api.router.sessions.all():
            self.flush(session)

    @staticmethod
    def _send_held(session: Any, held: Held | tuple[()]) -> None:
        """Send what was held (no longer the session's state: it holds nothing now)."""
        if held:
            send = session.send
            for stanza in held.values():  # type: ignore[union-attr]
                send(stanza)
