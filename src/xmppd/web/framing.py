"""XMPP over WebSocket (RFC 7395), sans-IO: the opening handshake's checks, the
``<open/>``/``<close/>`` framing elements, and one complete element per text message.

Each WebSocket message is parsed on its own (RFC 7395 §3.3.3), strictly: exactly one
complete element per text message.  Several elements in one message, an element split
across messages, a message of whitespace only or of text are ``not-well-formed`` (the
stream error for input that is not one well-formed XML document); a binary message is
``bad-format`` with close code 1003.  (Prosody accepts all of these as a byte stream, and
ejabberd closes without saying why.)  A stanza may omit its ``jabber:client`` namespace
declaration; what we send always declares it, since each message stands alone.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from xmppd.transport.http import HTTPError
from xmppd.xml.element import Element, escape_attr
from xmppd.xml.events import STREAM_NS, StreamOpen
from xmppd.xml.framing import StreamErrorCondition
from xmppd.xml.stanza import CLIENT_NS

FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
SUBPROTOCOL = "xmpp"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: What the tokenizer of a WebSocket stream is fed first: every message is then parsed as a
#: child of a stream whose default namespace is jabber:client (a message cannot declare
#: another stream-level context: ``<stream:stream>`` itself is not allowed in a message).
WRAPPER = (f"<stream:stream xmlns='{CLIENT_NS}' xmlns:stream='{STREAM_NS}'>").encode()

_STREAM_PREFIXES = (b"<stream:features>", b"<stream:error>")
_XMLNS_STREAM = f" xmlns:stream='{STREAM_NS}'>".encode()
_WS = b" \t\r\n"


def handshake(method: str, headers: dict[str, str]) -> dict[str, str]:
    """The ``101`` headers for a valid RFC 6455 opening handshake with the ``xmpp``
    subprotocol; :class:`HTTPError` otherwise."""
    if method != "GET":
        raise HTTPError(405, "a WebSocket handshake is a GET", {"Allow": "GET"})
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HTTPError(426, "this endpoint speaks WebSocket only",
                        {"Upgrade": "websocket", "Connection": "Upgrade"})
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HTTPError(400, "Connection: Upgrade is missing")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HTTPError(426, "WebSocket version 13 is required",
                        {"Sec-WebSocket-Version": "13"})
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HTTPError(400, "invalid Sec-WebSocket-Key")
    if SUBPROTOCOL not in _tokens(headers.get("sec-websocket-protocol", ""), lower=False):
        raise HTTPError(400, "the 'xmpp' WebSocket subprotocol is required (RFC 7395)")
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    return {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept,
            "Sec-WebSocket-Protocol": SUBPROTOCOL}


def _tokens(value: str, lower: bool = True) -> list[str]:
    return [t.strip().lower() if lower else t.strip() for t in value.split(",")]


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """No list: any origin; else a browser's ``Origin`` must be listed (a client that sends
    none is not a browser page and is let in)."""
    if not allowed or origin is None:
        return True
    return origin.rstrip("/").lower() in allowed


def message_element(tokenizer: Any, payload: bytes) -> Element:
    """The one element a text message carries; a stream error when it carries anything
    else.  ``tokenizer`` was fed :data:`WRAPPER` first."""
    # Hot path: every stanza of a web client comes through here.
    if not payload or payload[0] != 60 or payload[-1] != 62:  # not "<...>": trim it
        payload = payload.strip(_WS)
        if not payload:
            raise StreamErrorCondition("not-well-formed", "a message must carry one element "
                                       "(RFC 7395 §3.3.3): this one is empty or whitespace")
    events = tokenizer.feed(payload)
    if len(events) == 1 and not tokenizer.buffered:
        element = events[0]
        if type(element) is Element:
            return element
        raise StreamErrorCondition("not-well-formed", "a message must carry one element")
    what = "an incomplete element" if not events else "more than one element"
    raise StreamErrorCondition("not-well-formed", f"a message must carry one complete "
                               f"element (RFC 7395 §3.3.3): this one has {what}")


def stream_open(el: Element) -> StreamOpen:
    """A client's ``<open/>`` as the stream header the c2s negotiation checks."""
    attrs = dict(el.attrs)
    if attrs.get("version") != "1.0":
        raise StreamErrorCondition("unsupported-version", "<open/> needs version='1.0'")
    return StreamOpen("stream", STREAM_NS, attrs, {"": CLIENT_NS, "stream": STREAM_NS})


def open_bytes(stream_id: str, from_: str | None) -> bytes:
    """Our ``<open/>`` (RFC 7395 §3.4)."""
    text = f"<open xmlns='{FRAMING_NS}' id='{stream_id}' version='1.0' xml:lang='en'"
    if from_:
        text += f" from='{escape_attr(from_)}'"
    return (text + "/>").encode()


def close_bytes(see_other_uri: str | None = None) -> bytes:
    """Our ``<close/>``, with ``see-other-uri`` to send the client elsewhere (§3.6.1)."""
    extra = f" see-other-uri='{escape_attr(see_other_uri)}'" if see_other_uri else ""
    return f"<close xmlns='{FRAMING_NS}'{extra}/>".encode()


def standalone(data: bytes) -> bytes:
    """Declare the ``stream`` prefix on ``<stream:features>``/``<stream:error>``: each
    message is a document of its own."""
    if data.startswith(_STREAM_PREFIXES):
        head, _, rest = data.partition(b">")
        return head + _XMLNS_STREAM + rest
    return data
