"""Broadcasts (``modules/_fanout.py``): serialized once, written as bytes into the output
buffer of every stream whose ``send`` is marked ``plain_send``; any other gets an element."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from xmppd.c2s.stream import C2SStream
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


def test_a_broadcast_is_bytes_for_a_plain_stream_and_an_element_for_any_other():
    streams = {"a@x/1": PlainStream(), "b@x/2": FramingStream()}
    sessions = {JID(full): SimpleNamespace(transport=stream) for full, stream in streams.items()}
    router = SimpleNamespace(
        sessions=SimpleNamespace(get=sessions.get),
        hooks=SimpleNamespace(fire_sync=lambda *args: False),
        route_from_server=lambda stanza: None, delivered=defaultdict(int))
    deliverer = Deliverer(router)
    bc = Broadcast(Element("message", CLIENT_NS, {"from": "room@muc.x/n", "to": "gone@x"},
                           [Element("body", CLIENT_NS, {}, ["hi"])]))
    for full in streams:
        deliverer.deliver(bc, Target(full))
    plain, framing = streams["a@x/1"], streams["b@x/2"]
    assert plain.elements == [] and len(plain.raw) == 1
    assert b'to="a@x/1"' in plain.raw[0] and b"<body>hi</body>" in plain.raw[0]
    assert framing.raw == [] and [e.get("to") for e in framing.elements] == ["b@x/2"]
    assert framing.elements[0] is not bc.stanza  # its own copy
    assert router.delivered["message"] == 2
