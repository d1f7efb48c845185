"""Broadcasts (``modules/_fanout.py``): serialized once, written as bytes into the output
buffer of every stream whose ``send`` is marked ``plain_send``; any other gets an element."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from xmppd.c2s.stream import C2SStream
from xmppd.core.hooks import Hooks, Interest
from xmppd.jid import JID
from xmppd.modules._fanout import Broadcast, Deliverer, Target
from xmppd.transport.stream import XMLStream, plain_send
from xmppd.web.stream import WebSocketC2S
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS


class PlainStream:
    default_ns = CLIENT_NS

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.elements: list[Element] = []

    @plain_send
    def send(self, element: Element) -> None:
        self.elements.append(element)

    def send_bytes(self, data: bytes) -> None:
        self.raw.append(data)


class FramingStream(PlainStream):
    def send(self, element: Element) -> None:  # an override, unmarked
        self.elements.append(element)


def test_the_streams_that_buffer_bytes_are_marked_and_the_framing_ones_not():
    assert XMLStream.send.plain_send and C2SStream.send.plain_send
    assert not getattr(WebSocketC2S.send, "plain_send", False)


def _deliverer(streams: dict[str, PlainStream]) -> tuple[Deliverer, Hooks]:
    """A deliverer over a real Hooks and sessions whose transports are ``streams``."""
    sessions = {JID(full): SimpleNamespace(transport=stream, bare=JID(full).bare)
                for full, stream in streams.items()}
    hooks = Hooks()
    router = SimpleNamespace(sessions=SimpleNamespace(get=sessions.get), hooks=hooks,
                             route_from_server=lambda stanza: None, delivered=defaultdict(int))
    return Deliverer(router), hooks


def _headline(ns: str = "urn:x:event") -> Broadcast:
    msg = Element("message", CLIENT_NS, {"from": "pubsub.x", "type": "headline"}, [])
    msg.subelement("event", ns).subelement("items", attrs={"node": "n"})
    return Broadcast(msg)


def test_stanza_inbound_runs_only_for_recipients_whose_account_is_not_quiet():
    streams = {"a@x/1": PlainStream(), "b@x/1": PlainStream()}
    deliverer, hooks = _deliverer(streams)
    bit = hooks.new_bit()
    seen: list[str] = []
    hooks.hook("stanza/inbound", lambda st, session: seen.append(st.get("to")) or False,
               interest=Interest(account=True), bit=bit)
    hooks.set_quiet(JID("a@x"), bit, True)  # b@x is not quiet (a block list, say)
    deliverer.deliver_all(_headline(), ["a@x/1", "b@x/1", "not a jid@"])
    assert seen == ["b@x/1"]
    assert hooks.skips("stanza/inbound") == 1
    assert all(len(s.raw) == 1 for s in streams.values())  # both delivered


def test_stanza_inbound_runs_for_all_when_a_handler_wants_the_payload_or_declared_nothing():
    streams = {"a@x/1": PlainStream()}
    deliverer, hooks = _deliverer(streams)
    bit = hooks.new_bit()
    seen: list[str] = []
    hooks.hook("stanza/inbound", lambda st, session: seen.append(st.get("to")) or False,
               interest=Interest(["urn:x:event"], account=True), bit=bit)
    hooks.set_quiet(JID("a@x"), bit, True)
    deliverer.deliver_all(_headline("urn:x:other"), ["a@x/1"])  # skipped
    deliverer.deliver_all(_headline("urn:x:event"), ["a@x/1"])  # its payload: called
    assert seen == ["a@x/1"]
    hooks.hook("stanza/inbound", lambda st, session: False)  # no interest: the gate goes
    deliverer.deliver_all(_headline("urn:x:other"), ["a@x/1"])
    assert seen == ["a@x/1", "a@x/1"]
    assert hooks.skips("stanza/inbound") == 1


def test_a_handler_that_takes_a_broadcast_keeps_it_and_the_others_get_bytes():
    streams = {"a@x/1": PlainStream(), "b@x/1": PlainStream()}
    deliverer, hooks = _deliverer(streams)
    kept: list[Element] = []
    hooks.hook("stanza/inbound", lambda st, s: kept.append(st) or st.get("to") == "a@x/1")
    bc = _headline()
    deliverer.deliver_all(bc, ["a@x/1", "b@x/1"])
    assert [k.get("to") for k in kept] == ["a@x/1", "b@x/1"]
    assert kept[0].get("to") == "a@x/1" and bc.stanza is not kept[0]
    assert streams["a@x/1"].raw == [] and len(streams["b@x/1"].raw) == 1


def test_targets_are_kept_and_the_cache_starts_again_past_its_bound(monkeypatch):
    deliverer, _hooks = _deliverer({})
    assert deliverer.target("a@x/1") is deliverer.target("a@x/1")
    monkeypatch.setattr("xmppd.modules._fanout.TARGET_CACHE", 2)
    first = deliverer.target("a@x/1")
    deliverer.target("b@x/1")
    deliverer.target("c@x/1")  # past the bound: started again
    assert deliverer.target("a@x/1") is not first


def test_a_broadcast_is_bytes_for_a_plain_stream_and_an_element_for_any_other():
    streams = {"a@x/1": PlainStream(), "b@x/2": FramingStream()}
    deliverer, _hooks = _deliverer(streams)
    bc = Broadcast(Element("message", CLIENT_NS, {"from": "room@muc.x/n", "to": "gone@x"},
                           [Element("body", CLIENT_NS, {}, ["hi"])]))
    for full in streams:
        deliverer.deliver(bc, Target(full))
    plain, framing = streams["a@x/1"], streams["b@x/2"]
    assert plain.elements == [] and len(plain.raw) == 1
    assert b'to="a@x/1"' in plain.raw[0] and b"<body>hi</body>" in plain.raw[0]
    assert framing.raw == [] and [e.get("to") for e in framing.elements] == ["b@x/2"]
    assert framing.elements[0] is not bc.stanza  # its own copy
    assert deliverer.delivered["message"] == 2
