"""BOSH (XEP-0124) carrying XMPP (XEP-0206), sans-IO: the ``<body/>`` wrapper and the
request/response bookkeeping of one HTTP session.

:func:`parse_body` turns a request body into a :class:`Body` (its attributes and the
elements it carries), through the stream tokenizer and its limits.  A :class:`BOSHSession`
keeps the ``rid`` window: it admits a request (:meth:`BOSHSession.accept`: new, or a
retransmission answered from the cache, or a terminal binding error), releases requests
for processing in ``rid`` order however they arrived (:meth:`BOSHSession.ready`), holds
them, and decides which held request is answered with what (:meth:`BOSHSession.answers`),
caching each answer for a retransmission.  Timers, futures and the XMPP negotiation live in
the asyncio glue (:mod:`xmppd.modules.bosh`); this module never touches a clock of its own:
times are passed in.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from xmppd.xml.element import Element, escape_attr
from xmppd.xml.events import STREAM_NS, StreamClose, StreamOpen
from xmppd.xml.framing import stream_error_bytes
from xmppd.xml.stanza import CLIENT_NS
from xmppd.xml.tokenizer import Tokenizer, TokenizerError

BOSH_NS = "http://jabber.org/protocol/httpbind"
XBOSH_NS = "urn:xmpp:xbosh"
_RESTART = f"{{{XBOSH_NS}}}restart"
_VERSION = f"{{{XBOSH_NS}}}version"
#: The largest rid a client may use (XEP-0124 §14.1: 2^53 - 1, the JavaScript limit).
MAX_RID = 2**53 - 1
_OPEN = (f"<body xmlns='{BOSH_NS}' xmlns:stream='{STREAM_NS}'").encode()


class BOSHError(Exception):
    """A terminal binding error (XEP-0124 §17.2): ``condition`` goes in ``<body
    type='terminate' condition=.../>``; ``sid`` names the session it ends, if known."""

    def __init__(self, condition: str, text: str = "", sid: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.sid = sid


@dataclass
class Body:
    """One request: the ``<body/>`` attributes and the elements it carries."""

    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)

    @property
    def sid(self) -> str | None:
        return self.attrs.get("sid")

    @property
    def rid(self) -> int:
        return int(self.attrs["rid"])

    @property
    def restart(self) -> bool:
        return self.attrs.get(_RESTART) in ("true", "1")

    @property
    def terminate(self) -> bool:
        return self.attrs.get("type") == "terminate"

    @property
    def pause(self) -> int | None:
        value = self.attrs.get("pause")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def xmpp_version(self) -> str | None:
        return self.attrs.get(_VERSION)

    def number(self, name: str, default: int) -> int:
        """A non-negative integer attribute (``default`` when absent); ``bad-request``
        when it is not one."""
        value = self.attrs.get(name)
        if value is None:
            return default
        if not value.isdigit() or len(value) > 16:
            raise BOSHError("bad-request", f"'{name}' must be a non-negative integer", self.sid)
        return int(value)


def parse_body(data: bytes, *, max_stanza_size: int, max_depth: int, max_attrs: int) -> Body:
    """The request ``data`` as a :class:`Body`; :class:`BOSHError` ``bad-request`` when it
    is not one well-formed ``<body/>`` of the BOSH namespace with a valid ``rid``
    (``policy-violation`` when an element is over the tokenizer's limits)."""
    tokenizer = Tokenizer(max_stanza_size, max_depth, max_attrs)
    try:
        events = tokenizer.feed(data)
    except TokenizerError as exc:
        condition = "policy-violation" if exc.condition == "policy-violation" else "bad-request"
        sid = _header_sid(exc.events)
        raise BOSHError(condition, exc.text or exc.condition, sid) from None
    if not events or type(events[0]) is not StreamOpen or type(events[-1]) is not StreamClose:
        raise BOSHError("bad-request", "not a complete <body/>", _header_sid(events))
    head: StreamOpen = events[0]
    if head.name != "body" or head.ns != BOSH_NS:
        raise BOSHError("bad-request", f"the root element must be <body xmlns='{BOSH_NS}'/>")
    body = Body(dict(head.attrs), [])
    rid = body.attrs.get("rid", "")
    if not rid.isdigit() or not 0 < int(rid) <= MAX_RID:
        raise BOSHError("bad-request", "a request needs a valid 'rid'", body.sid)
    for event in events[1:-1]:
        if type(event) is not Element:
            raise BOSHError("bad-request", "one <body/> per request", body.sid)
        if event.ns == BOSH_NS:
            # XEP-0206 §: stanzas are qualified by jabber:client; some clients leave the
            # namespace to be inherited from <body/>: that means the same thing here.
            event.ns = CLIENT_NS
        body.children.append(event)
    return body


def _header_sid(events: Iterable[object]) -> str | None:
    for event in events:
        if type(event) is StreamOpen:
            return event.attrs.get("sid")
    return None


def new_sid() -> str:
    """An unpredictable session id (XEP-0124 §7.1: it is the only credential of the HTTP
    session besides the rid): 192 random bits."""
    return secrets.token_urlsafe(24)


def body_bytes(payloads: Iterable[bytes] = (), attrs: dict[str, str] | None = None) -> bytes:
    """A response ``<body/>`` (with the ``stream`` prefix declared for XEP-0206 features
    and errors) wrapping ``payloads``."""
    head = _OPEN
    if attrs:
        head += "".join(f" {k}='{escape_attr(v)}'" for k, v in attrs.items()).encode()
    inner = b"".join(payloads)
    if not inner:
        return head + b"/>"
    return head + b">" + inner + b"</body>"


def terminate_bytes(condition: str | None = None, payloads: Iterable[bytes] = ()) -> bytes:
    """``<body type='terminate'/>``, with a terminal binding ``condition`` if any."""
    attrs = {"type": "terminate"}
    if condition:
        attrs["condition"] = condition
    return body_bytes(payloads, attrs)


def stream_error_body(condition: str, text: str | None = None) -> bytes:
    """XEP-0206 §: a stream error is ``remote-stream-error`` carrying the
    ``<stream:error/>``."""
    return terminate_bytes("remote-stream-error", [stream_error_bytes(condition, text)])


@dataclass(frozen=True)
class Terms:
    """The session's parameters as agreed at creation (XEP-0124 §7.1)."""

    wait: int
    hold: int
    requests: int
    inactivity: int
    polling: int
    maxpause: int


def negotiate(body: Body, *, max_wait: int, max_hold: int, inactivity: int, polling: int,
              maxpause: int) -> Terms:
    """The session terms for a creation request: the client's ``wait`` and ``hold``
    capped by ours; one more request than held, so that the client can always send."""
    if "wait" not in body.attrs or "hold" not in body.attrs:
        raise BOSHError("bad-request", "a session creation request needs 'wait' and 'hold'")
    wait = min(body.number("wait", max_wait), max_wait)
    hold = min(body.number("hold", 1), max_hold)
    return Terms(wait, hold, hold + 1, inactivity, polling, maxpause)


NEW = "new"
RETRANSMIT = "retransmit"


class BOSHSession:
    """The ``rid`` bookkeeping of one BOSH session (no I/O, no clock)."""

    def __init__(self, sid: str, rid: int, terms: Terms, now: float) -> None:
        self.sid = sid
        self.terms = terms
        self.last_rid = rid  # the highest rid released for processing, in order
        self.waiting: dict[int, Body] = {}  # arrived ahead of a missing rid
        self.open: set[int] = set()  # accepted, not answered yet
        self.held: list[int] = []  # processed, waiting for something to send (rid order)
        self.cache: OrderedDict[int, bytes] = OrderedDict()  # answers, for retransmits
        self.out: list[bytes] = []  # payloads for the client, not sent yet
        self.last_request_at = now
        self.paused = 0  # seconds of the pause in force (0: none)

    def accept(self, body: Body, now: float) -> str:
        """:data:`NEW` or :data:`RETRANSMIT` (answered by :meth:`replay` or, when it is
        still open, together with the original); :class:`BOSHError` for a rid outside the
        window or forgotten (``item-not-found``) or overactivity (``policy-violation``)."""
        rid = body.rid
        if rid <= self.last_rid or rid in self.waiting:
            if rid in self.cache or rid in self.open:
                return RETRANSMIT
            raise BOSHError("item-not-found", f"rid {rid} is no longer known", self.sid)
        terms = self.terms
        if rid > self.last_rid + terms.requests:
            raise BOSHError("item-not-found", f"rid {rid} is outside the window", self.sid)
        special = body.terminate or body.pause is not None
        # XEP-0124 §12: more simultaneous requests than agreed (one more is allowed to
        # pause or terminate), or empty polls faster than 'polling' while the agreed
        # number of requests is held already.
        if not special and len(self.open) + 1 > terms.requests:
            raise BOSHError("policy-violation", f"more than {terms.requests} simultaneous "
                            "requests", self.sid)
        if (not special and not body.children and not body.restart
                and len(self.held) >= terms.hold
                and now - self.last_request_at < terms.polling):
            raise BOSHError("policy-violation", f"empty requests more often than every "
                            f"{terms.polling} s", self.sid)
        self.last_request_at = now
        self.open.add(rid)
        self.waiting[rid] = body
        return NEW

    def replay(self, rid: int) -> bytes | None:
        """The cached answer to ``rid`` (None: not answered yet)."""
        return self.cache.get(rid)

    def ready(self) -> list[Body]:
        """The accepted requests that can be processed now, in rid order."""
        out = []
        while self.last_rid + 1 in self.waiting:
            self.last_rid += 1
            out.append(self.waiting.pop(self.last_rid))
        return out

    def hold(self, rid: int) -> None:
        """``rid`` is processed: it waits for something to carry back."""
        self.held.append(rid)

    def answers(self, *, upto: int | None = None, everything: bool = False) -> list[tuple[int, bytes]]:
        """The held requests to answer now, with their answers: the oldest when there is
        something to send, the oldest beyond ``hold``, all up to ``upto`` (their wait is
        over), or all (``everything``: a pause)."""
        held, out = self.held, []
        while held:
            rid = held[0]
            if not (self.out or len(held) > self.terms.hold or everything
                    or (upto is not None and rid <= upto)):
                break
            out.append((held.pop(0), self._answer(rid, body_bytes(self.out))))
            self.out = []
        return out

    def terminate(self, data: bytes) -> list[tuple[int, bytes]]:
        """End the session: the held requests get what is pending, the last one ``data``
        (a terminate body)."""
        out = []
        held = self.held
        while len(held) > 1 and self.out:
            rid = held.pop(0)
            out.append((rid, self._answer(rid, body_bytes(self.out))))
            self.out = []
        while held:
            rid = held.pop(0)
            out.append((rid, self._answer(rid, data)))
        return out

    def answered(self, rid: int, data: bytes) -> None:
        """``rid`` was answered outside :meth:`answers` (session creation)."""
        self.open.discard(rid)
        self._remember(rid, data)

    def _answer(self, rid: int, data: bytes) -> bytes:
        self.open.discard(rid)
        self._remember(rid, data)
        return data

    def _remember(self, rid: int, data: bytes) -> None:
        cache = self.cache
        cache[rid] = data
        while len(cache) > self.terms.requests:
            cache.popitem(last=False)


def creation_attrs(terms: Terms, sid: str, domain: str, stream_id: str,
                   body: Body) -> dict[str, str]:
    """The attributes of the session creation response (XEP-0124 §7.1, XEP-0206 §)."""
    attrs = {
        "sid": sid, "wait": str(terms.wait), "hold": str(terms.hold),
        "requests": str(terms.requests), "inactivity": str(terms.inactivity),
        "polling": str(terms.polling), "maxpause": str(terms.maxpause),
        "ver": "1.11", "from": domain, "authid": stream_id, "secure": "true",
        "xmlns:xmpp": XBOSH_NS, "xmpp:version": "1.0", "xmpp:restartlogic": "true",
        "charsets": "UTF-8",
    }
    if "ack" in body.attrs:
        attrs["ack"] = str(body.rid)
    return attrs
