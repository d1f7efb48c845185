"""Routing rules (RFC 6120 §10) and the message module's RFC 6121 §8.5 delivery, with fake sessions: no sockets, no loop
unless a rule needs one (offline delivery is a coroutine)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from xmppd.core.hooks import Hooks
from xmppd.core.moduleapi import ModuleAPI
from xmppd.core.router import Router, SessionTable
from xmppd.jid import JID
from xmppd.modules import message as message_module
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, error_condition, message


class FakeSession:
    """Just what the router uses of a C2S session."""

    remote = False  # bound here, not on another worker

    def __init__(self, jid: str, available: bool = True, priority: int = 0) -> None:
        self.jid = JID(jid)
        self.bare = self.jid.bare
        self.available = available
        self.priority = priority
        self.received: list[Element] = []
        self.errors: list[str] = []
        self.transport = self  # the router delivers through session.transport.send

    def send(self, element: Element) -> None:
        self.received.append(element)

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self.errors.append(condition)


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


class FakePresence:
    """The presence module's service, read from the fake sessions."""

    @staticmethod
    def available(session: FakeSession) -> bool:
        return session.available

    @staticmethod
    def priority(session: FakeSession) -> int:
        return session.priority


@pytest.fixture
def router(hooks) -> Router:
    """A router with the message module (bare-JID delivery) loaded through its handle."""
    router = Router(hooks, ["example.com"])
    core = SimpleNamespace(hooks=hooks, router=router, services={"presence": FakePresence()})
    message_module.Message().load(ModuleAPI(core, "message"))
    return router


def bind(router: Router, jid: str, **kw) -> FakeSession:
    session = FakeSession(jid, **kw)
    assert router.sessions.add(session) is None
    return session


def msg(to: str, mtype: str | None = "chat", sender: str = "alice@example.com/a") -> Element:
    el = message(to, "hi", type=mtype or "chat", **{"from": sender, "id": "m1"})
    if mtype is None:
        del el.attrs["type"]
    return el


def iq(to: str | None, itype: str = "get", payload: str = "urn:xmpp:ping",
       sender: str = "alice@example.com/a") -> Element:
    attrs = {"type": itype, "id": "i1", "from": sender}
    if to is not None:
        attrs["to"] = to
    el = Element("iq", CLIENT_NS, attrs, [])
    if payload:
        el.subelement("ping" if payload == "urn:xmpp:ping" else "query", payload)
    return el


def route(router: Router, stanza: Element, origin=None) -> None:
    """Route; run the coroutine the router may return (offline handling) to completion."""
    result = router.route(stanza, origin)
    if result is not None:
        asyncio.run(_await(result))


async def _await(awaitable) -> None:
    await awaitable


def errors_to(session: FakeSession) -> list[str | None]:
    return [error_condition(s) for s in session.received if s.get("type") == "error"]


# -- the session table ---------------------------------------------------------------------------


def test_session_table_add_get_remove_replace():
    table = SessionTable()
    a1, a2 = FakeSession("alice@example.com/1"), FakeSession("alice@example.com/2")
    assert table.add(a1) is None and table.add(a2) is None
    assert table.get(JID("alice@example.com/1")) is a1
    assert table.get(JID("alice@example.com/3")) is None
    assert table.count(JID("alice@example.com")) == 2 and len(table) == 2
    again = FakeSession("alice@example.com/1")
    assert table.add(again) is a1  # displaced: the caller ends the old stream
    assert table.remove(a1) is False  # no longer bound: must not unbind the new one
    assert table.get(JID("alice@example.com/1")) is again
    assert table.remove(again) and table.remove(a2)
    assert len(table) == 0 and table.resources(JID("alice@example.com")) == []


# -- full JIDs -----------------------------------------------------------------------------------


def test_message_to_bound_full_jid_goes_to_that_resource_only(router):
    phone = bind(router, "bob@example.com/phone", priority=-1)
    laptop = bind(router, "bob@example.com/laptop", priority=5)
    route(router, msg("bob@example.com/phone"))
    assert [m.get("id") for m in phone.received] == ["m1"]
    assert laptop.received == []


def test_message_to_unavailable_session_full_jid_still_delivered(router):
    """A bound but not available resource: the full JID is a session, deliver to it."""
    quiet = bind(router, "bob@example.com/quiet", available=False)
    route(router, msg("bob@example.com/quiet", "normal"))
    assert len(quiet.received) == 1


@pytest.mark.parametrize("mtype", ["chat", "normal", None])
def test_unknown_full_jid_chat_and_normal_treated_as_bare(router, mtype):
    laptop = bind(router, "bob@example.com/laptop", priority=1)
    route(router, msg("bob@example.com/gone", mtype))
    assert len(laptop.received) == 1
    assert laptop.received[0].get("to") == "bob@example.com/gone"  # addressing unchanged


def test_unknown_full_jid_groupchat_is_service_unavailable(router):
    alice = bind(router, "alice@example.com/a")
    laptop = bind(router, "bob@example.com/laptop")
    route(router, msg("bob@example.com/gone", "groupchat"))
    assert laptop.received == []
    assert errors_to(alice) == ["service-unavailable"]


@pytest.mark.parametrize("mtype", ["headline", "error"])
def test_unknown_full_jid_headline_and_error_dropped(router, mtype):
    alice = bind(router, "alice@example.com/a")
    laptop = bind(router, "bob@example.com/laptop")
    route(router, msg("bob@example.com/gone", mtype))
    assert laptop.received == [] and alice.received == []


def test_iq_to_full_jid(router):
    alice = bind(router, "alice@example.com/a")
    bob = bind(router, "bob@example.com/b")
    route(router, iq("bob@example.com/b"))
    assert len(bob.received) == 1
    route(router, iq("bob@example.com/other"))
    assert errors_to(alice) == ["service-unavailable"]
    # results and errors to a gone resource vanish (no error loops)
    route(router, iq("bob@example.com/other", "result", payload=""))
    route(router, iq("bob@example.com/other", "error", payload=""))
    assert len(alice.received) == 1


# -- bare JIDs: RFC 6121 §8.5.2 ------------------------------------------------------------------


def test_chat_to_bare_goes_to_all_non_negative_available_resources(router):
    a = bind(router, "bob@example.com/a", priority=0)
    b = bind(router, "bob@example.com/b", priority=10)
    neg = bind(router, "bob@example.com/neg", priority=-5)
    away = bind(router, "bob@example.com/away", available=False, priority=50)
    route(router, msg("bob@example.com", "chat"))
    assert (len(a.received), len(b.received), len(neg.received), len(away.received)) == (1, 1, 0, 0)


@pytest.mark.parametrize("mtype", ["normal", None, "headline"])
def test_normal_and_headline_to_bare_go_to_highest_priority(router, mtype):
    low = bind(router, "bob@example.com/low", priority=1)
    top1 = bind(router, "bob@example.com/top1", priority=7)
    top2 = bind(router, "bob@example.com/top2", priority=7)
    route(router, msg("bob@example.com", mtype))
    assert low.received == []
    assert len(top1.received) == 1 and len(top2.received) == 1


def test_bare_with_only_negative_priority_is_like_offline(router, hooks):
    alice = bind(router, "alice@example.com/a")
    neg = bind(router, "bob@example.com/neg", priority=-1)
    route(router, msg("bob@example.com", "chat"))
    assert neg.received == []
    assert errors_to(alice) == ["service-unavailable"]  # no offline storage loaded


def test_bare_offline_message_goes_to_offline_hook(router, hooks):
    alice = bind(router, "alice@example.com/a")
    stored = []

    async def store(stanza, origin):
        stored.append(stanza)
        return True

    hooks.hook("message/offline", store)
    route(router, msg("bob@example.com", "normal"))
    assert len(stored) == 1 and alice.received == []


@pytest.mark.parametrize("mtype", ["headline", "error"])
def test_bare_headline_and_error_without_resources_are_dropped(router, hooks, mtype):
    alice = bind(router, "alice@example.com/a")
    offered = []
    hooks.hook("message/offline", lambda s, o: offered.append(s))
    route(router, msg("bob@example.com", mtype))
    assert alice.received == [] and offered == []


def test_groupchat_to_bare_is_service_unavailable(router):
    alice = bind(router, "alice@example.com/a")
    bob = bind(router, "bob@example.com/b")
    route(router, msg("bob@example.com", "groupchat"))
    assert bob.received == []
    assert errors_to(alice) == ["service-unavailable"]


def test_message_bare_hook_can_take_over(router, hooks):
    bob = bind(router, "bob@example.com/b")
    seen = []
    hooks.hook("message/bare", lambda s, o: seen.append(s) or True)
    route(router, msg("bob@example.com"))
    assert len(seen) == 1 and bob.received == []


def test_stanza_inbound_hook_can_block_delivery(router, hooks):
    bob = bind(router, "bob@example.com/b")
    hooks.hook("stanza/inbound", lambda s, session: s.findtext("body") == "blocked")
    route(router, msg("bob@example.com/b"))
    blocked = msg("bob@example.com/b")
    blocked.find("body").children[:] = ["blocked"]
    route(router, blocked)
    assert [m.findtext("body") for m in bob.received] == ["hi"]


def test_no_to_is_the_senders_own_account(router, hooks):
    alice = bind(router, "alice@example.com/a")
    other = bind(router, "alice@example.com/b")
    seen = []
    hooks.iq_handler("get", "jabber:iq:roster", "query",
                     lambda s, o, p: seen.append((s.get("to"), o)), to="bare")
    route(router, iq(None, payload="jabber:iq:roster"), alice)
    assert seen == [(None, alice)]
    plain = msg("alice@example.com", "chat")
    del plain.attrs["to"]
    route(router, plain, alice)
    assert len(alice.received) == 1 and len(other.received) == 1


# -- IQs to bare JIDs and the host ------------------------------------------------------------


def test_iq_to_bare_without_handler_is_service_unavailable(router):
    alice = bind(router, "alice@example.com/a")
    bind(router, "bob@example.com/b")
    route(router, iq("bob@example.com"))
    assert errors_to(alice) == ["service-unavailable"]


def test_iq_to_host_handler_and_stanza_error(router, hooks):
    from xmppd.xml.stanza import StanzaError, reply

    alice = bind(router, "alice@example.com/a")
    hooks.iq_handler("get", "urn:xmpp:ping", "ping", lambda s, o, p: reply(s))

    def refuse(s, o, p):
        raise StanzaError("forbidden")

    hooks.iq_handler("set", "urn:xmpp:ping", "ping", refuse)
    route(router, iq("example.com"))
    route(router, iq("example.com", "set"))
    route(router, iq("example.com", payload="urn:example:nothing"))
    assert [s.get("type") for s in alice.received] == ["result", "error", "error"]
    assert errors_to(alice) == ["forbidden", "service-unavailable"]
    assert alice.received[0].get("from") == "example.com"


def test_iq_get_with_no_payload_is_bad_request(router):
    alice = bind(router, "alice@example.com/a")
    route(router, iq("example.com", payload=""))
    assert errors_to(alice) == ["bad-request"]


def test_message_to_host_without_handler_bounces_but_errors_do_not(router):
    alice = bind(router, "alice@example.com/a")
    route(router, msg("example.com", "normal"))
    route(router, msg("example.com", "error"))
    assert errors_to(alice) == ["service-unavailable"]


# -- other domains and bad addresses --------------------------------------------------------------


def test_remote_domain_without_s2s_is_remote_server_not_found(router, hooks):
    alice = bind(router, "alice@example.com/a")
    route(router, msg("carol@elsewhere.net", "chat"))
    assert errors_to(alice) == ["remote-server-not-found"]
    hooks.hook("route/remote", lambda s, o: True)
    route(router, msg("carol@elsewhere.net", "chat"))
    assert len(alice.received) == 1


def test_malformed_to_is_jid_malformed(router):
    alice = bind(router, "alice@example.com/a")
    route(router, msg("bad@@example.com", "chat"))
    assert errors_to(alice) == ["jid-malformed"]


def test_errors_are_never_answered_with_errors(router):
    alice = bind(router, "alice@example.com/a")
    route(router, msg("nobody@example.com", "error"))
    route(router, iq("nobody@example.com/x", "error", payload=""))
    route(router, msg("bad@@example.com", "error"))
    assert alice.received == []


def test_presence_events(router, hooks):
    seen = []
    for event in ("presence/bare", "presence/full", "presence/host"):
        hooks.hook(event, lambda *args, e=event: seen.append(e))
    bob = bind(router, "bob@example.com/b")
    pres = Element("presence", CLIENT_NS, {"from": "alice@example.com/a"}, [])
    for to in ("bob@example.com", "bob@example.com/b", "bob@example.com/gone", "example.com"):
        stanza = Element("presence", CLIENT_NS, dict(pres.attrs, to=to), [])
        route(router, stanza)
    route(router, pres)  # broadcast: no 'to'
    assert seen == ["presence/bare", "presence/full", "presence/full", "presence/host",
                    "presence/host"]
    assert bob.received == []  # without a presence module nothing is delivered


# -- hooks that decide asynchronously (e.g. after a storage lookup) ------------------------------


async def _not_handled(*args) -> bool:
    await asyncio.sleep(0)
    return False


async def _handled(*args) -> bool:
    await asyncio.sleep(0)
    return True


@pytest.mark.parametrize("event,to", [
    ("message/full", "bob@example.com/b"),
    ("message/bare", "bob@example.com"),
])
@pytest.mark.parametrize("verdict", [_not_handled, _handled])
def test_async_message_hook_then_default_delivery(router, hooks, event, to, verdict):
    bob = bind(router, "bob@example.com/b")
    hooks.hook(event, verdict)
    route(router, msg(to, "chat"))
    assert len(bob.received) == (0 if verdict is _handled else 1)


@pytest.mark.parametrize("event,to,condition", [
    ("message/bare", "nobody@example.com", "service-unavailable"),
    ("message/host", "example.com", "service-unavailable"),
    ("route/remote", "carol@elsewhere.net", "remote-server-not-found"),
])
@pytest.mark.parametrize("verdict", [_not_handled, _handled])
def test_async_hook_not_handling_still_bounces(router, hooks, event, to, condition, verdict):
    alice = bind(router, "alice@example.com/a")
    hooks.hook(event, verdict)
    route(router, msg(to, "normal"))
    assert errors_to(alice) == ([] if verdict is _handled else [condition])


def test_async_iq_bare_hook_not_handling_bounces(router, hooks):
    alice = bind(router, "alice@example.com/a")
    hooks.hook("iq/bare", _not_handled)
    route(router, iq("bob@example.com"))
    assert errors_to(alice) == ["service-unavailable"]
