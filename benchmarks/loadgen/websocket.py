"""XMPP over WebSocket (RFC 7395) for the load generator: a carrier that puts the unchanged
TCP :class:`~loadgen.client.Session` on a WebSocket connection.

The carrier does the opening handshake, then turns what the session writes into one masked
text message per element (the stream header becomes ``<open/>``, ``</stream:stream>``
``<close/>``, a batch of messages one frame each; stanzas declare ``jabber:client``) and
hands the session the text of the server's messages, concatenated, so that its login
patterns and the workloads' hot path (``bytes.count`` of closing tags) run exactly as over
TCP.  Frames are coded with xmppd's codec (compiled when built), so the generator stays
cheap next to the server it measures.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from typing import Any

from xmppd.web.wsframe import CLOSE, PING, PONG, TEXT, FrameDecoder, encode_frame

_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
_TO = re.compile(rb"""\bto=['"]([^'"]+)['"]""")
_END = b"</message>"
_CLOSE_TAG = b"</stream:stream>"
_STANZA = re.compile(rb"<(iq|message|presence)\b")
_CLIENT = b" xmlns='jabber:client'"


def _qualified(element: bytes) -> bytes:
    """Each message stands alone (RFC 7395 §3.3.3): a stanza declares jabber:client (Prosody
    insists; xmppd assumes it)."""
    m = _STANZA.match(element)
    if m is None or b"xmlns=" in element[: element.find(b">")]:
        return element
    return element[: m.end()] + _CLIENT + element[m.end():]


class _Transport:
    """What the session writes to: every element becomes one text frame."""

    def __init__(self, carrier: WSCarrier) -> None:
        self.carrier = carrier
        self.mask = os.urandom(4)
        # The workloads send one message over and over (``msg * n``): its frame is made once.
        self.unit = b""
        self.unit_frame = b""

    def write(self, data: bytes) -> None:
        raw = self.carrier.raw
        unit = self.unit
        if unit and data.startswith(unit):
            n, rest = divmod(len(data), len(unit))
            if not rest and data == unit * n:
                raw.write(self.unit_frame * n if n > 1 else self.unit_frame)
                return
        if data.startswith(b"<?xml") or data.startswith(b"<stream:stream"):
            to = _TO.search(data)
            domain = to.group(1).decode() if to else ""
            raw.write(self._frame(f"<open xmlns='{_FRAMING}' to='{domain}' version='1.0'/>"
                                  .encode()))
            return
        if data == _CLOSE_TAG:
            raw.write(self._frame(f"<close xmlns='{_FRAMING}'/>".encode()))
            return
        if data.endswith(_END) and data.startswith(b"<message"):  # a batch of messages
            first = data[: data.find(_END) + len(_END)]
            if data == first * (len(data) // len(first)):
                self.unit, self.unit_frame = first, self._frame(_qualified(first))
                raw.write(self.unit_frame * (len(data) // len(first)))
                return
            mask = self.mask
            raw.write(b"".join(encode_frame(TEXT, _qualified(part + _END), True, mask)
                               for part in data.split(_END)[:-1]))
            return
        raw.write(self._frame(_qualified(data)))

    def _frame(self, data: bytes) -> bytes:
        return encode_frame(TEXT, data, True, self.mask)

    def close(self) -> None:
        self.carrier.raw.close()

    def abort(self) -> None:
        self.carrier.raw.abort()

    def is_closing(self) -> bool:
        return self.carrier.raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.carrier.raw.get_extra_info(name, default)


class WSCarrier(asyncio.Protocol):
    """The socket's protocol: upgrade, then frames in and out for ``session``."""

    def __init__(self, session: asyncio.Protocol, host: str, path: str) -> None:
        self.session = session
        self.host = host
        self.path = path
        self.raw: asyncio.Transport | None = None
        self.head = b""
        self.upgraded = False
        self.decoder = FrameDecoder(1 << 24, require_mask=False)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"  # type: ignore[attr-defined]
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Protocol: xmpp\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.head.split(b" ", 2)[1:2]
            data, self.head = self.head[end + 4:], b""
            if status != [b"101"]:
                self.raw.abort()
                return
            self.upgraded = True
            self.session.connection_made(_Transport(self))  # type: ignore[arg-type]
            if not data:
                return
        texts = []
        for op, payload in self.decoder.feed(data):
            if op == TEXT:
                texts.append(payload)
            elif op == PING:
                self.raw.write(encode_frame(PONG, payload, True, b"\0\0\0\0"))
            elif op == CLOSE:
                self.raw.close()
        if texts:
            self.session.data_received(texts[0] if len(texts) == 1 else b"".join(texts))

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.connection_lost(exc)
