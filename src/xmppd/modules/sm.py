"""XEP-0198: Stream Management (``urn:xmpp:sm:3``): acknowledgements and resumption.

A client that sends ``<enable/>`` after binding gets a :class:`StreamManagement` object,
which becomes both its stream's stanza handler (``C2SStream.sm``: it counts what the client
sends) and its session's transport (:meth:`Session.attach`: ``session.send`` is then
:meth:`StreamManagement.send`, which counts and queues what goes to the client).  Sessions
without stream management never meet this module on the routing path.

Acknowledgements mean durability: an ``<a h/>`` (and the ``h`` of ``<resumed/>``) is sent
only once the stanzas it counts are handled — the stream handles stanzas in order and waits
for handlers that return awaitables (an offline store waits for its commit), and writes
made in the background for a stanza are tracked on the session (:meth:`Session.track`),
which :meth:`Session.settled` awaits.

Resumption: a connection lost without a closing handshake (TCP close, TLS error, a
keepalive timeout) *detaches* a resumable session: it stays in the session table, its
``send`` queues (up to ``max_queue``), no unavailable presence is sent.  ``<resume/>`` from
the same account within the window re-attaches it (a still-attached old connection gets the
``conflict`` stream error) and re-sends what the client's ``h`` does not acknowledge.  When
the window passes (or the queue overflows, or the stream is closed cleanly) the session
ends for real (``session-closed``), and each unacknowledged stanza is handled as if its
recipient were unavailable: ``chat``/``normal`` messages fire ``message/offline`` (the
offline module stores them), IQ requests are answered with ``service-unavailable``, the
rest is dropped.

With workers or cluster nodes, a ``<resume/>`` for a session another process holds is
answered there and the session moves here (:mod:`xmppd.modules._sm_handover`).

Offline messages (``when_acked``): the offline module deletes the stored messages it
delivered to a stream-management session only once the client's ``h`` covers them; if the
session ends first the unacknowledged ones simply stay stored (delivered again at the next
login), and are not stored a second time as undeliverable.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from xmppd.c2s.negotiation import stream_extension
from xmppd.c2s.stanzas import client_stanza
from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.modules._sm_handover import ResumeElsewhere
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS

SM_NS = "urn:xmpp:sm:3"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
OFFLINE_EVENT = "message/offline"  # declared by the message module
#: Sequence numbers are unsigned 32-bit and wrap (XEP-0198 §4).
MASK = 0xFFFFFFFF
#: Expired session ids remembered (with their ``h``) for ``<failed h/>`` answers.
EXPIRED_KEPT = 1000

_R = f"<r xmlns='{SM_NS}'/>".encode()


def advance(h: int, n: int = 1) -> int:
    """``h`` counted ``n`` stanzas further, modulo 2^32."""
    return (h + n) & MASK


def distance(new: int, old: int) -> int:
    """How many stanzas ``new`` counts past ``old``, modulo 2^32."""
    return (new - old) & MASK


def parse_h(text: str | None) -> int | None:
    """An ``h`` attribute as a number, or None when it is not an unsigned 32-bit int."""
    if text is None or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MASK else None


def failed(condition: str, h: int | None = None) -> bytes:
    attr = "" if h is None else f" h='{h}'"
    return f"<failed xmlns='{SM_NS}'{attr}><{condition} xmlns='{STANZAS_NS}'/></failed>".encode()


class StreamManagement:
    """The XEP-0198 state of one session, and the transport that carries it: the current
    stream while attached, a queue while detached."""

    __slots__ = (
        "manager", "session", "stream", "policy", "id", "window", "h_in", "h_out", "acked",
        "queue", "requested", "timer", "ended", "waiters", "held",
    )

    def __init__(self, manager: StreamManagementModule, stream: Any, resumable: bool,
                 window: float, start: int = 0, *, session: Any = None, policy: Any = None,
                 previd: str | None = None) -> None:
        """On ``stream``'s session; or, for a session taken over from another process,
        detached (``stream`` None) with its ``session``, ``policy`` and id."""
        self.manager = manager
        self.session = stream.session if stream is not None else session
        self.stream = stream  # None while detached
        # route and unbind outlive the stream
        self.policy = stream.policy if stream is not None else policy
        # 128 random bits (22 characters) make the id unguessable; 192 (32 characters)
        # cost one more 16-byte allocator block per resumable session for nothing.
        self.id: str | None = previd or (secrets.token_urlsafe(16) if resumable else None)
        self.window = window
        self.h_in = start  # stanzas received from the client (handled)
        self.h_out = start  # stanzas sent to the client
        self.acked = start  # the client's last h
        # Sent, not yet acknowledged (h_out - acked).  A list, not a deque: an empty deque
        # costs 600 bytes per session, and acknowledgements drop a prefix in one go.  An
        # idle session's queue is empty: the shared () until something is sent, and again
        # once everything is acknowledged (56 bytes less per idle session).
        self.queue: list[Element] | tuple[()] = ()
        self.requested = False  # an <r/> of ours is unanswered
        self.timer: asyncio.TimerHandle | None = None  # the <r/> timer, or the expiry
        self.ended = False
        # when_acked: (base h, offsets of the stanzas past it, their ids, future), and the
        # ids of the stanzas another module keeps stored until acknowledged (not handed to
        # message/offline when the session ends: they are stored already).
        self.waiters: list[tuple[int, list[int], set[int], asyncio.Future]] | None = None
        self.held: set[int] | None = None

    # -- the Transport of the session -----------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.ended

    @property
    def peer(self) -> tuple[str, int] | None:
        return None if self.stream is None else self.stream.peer

    @property
    def heard(self) -> bool | None:
        return None if self.stream is None else self.stream.heard

    @heard.setter
    def heard(self, value: bool) -> None:
        if self.stream is not None:
            self.stream.heard = value

    def drop(self, reason: str) -> None:
        if self.stream is not None:
            self.stream.drop(reason)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()

    def stream_error(self, condition: str, text: str | None = None) -> None:
        draining = self.manager.draining and condition == "system-shutdown"
        stream = self.stream
        if stream is not None:
            if draining and self.id is not None and self.window > 0:
                # the drain asks the client to resume elsewhere: kept, detached (the
                # stream's close then finds itself superseded)
                self.manager.detach(self)
            stream.stream_error(condition, text)  # else the stream's close ends us
        elif not draining:  # detached, and replaced by a new session of the same full JID
            self.manager.end(self)

    def send(self, el: Element) -> None:
        """Count, queue until acknowledged, and write when attached."""
        if self.ended:  # a straggler: as if the recipient were unavailable
            self.manager.undeliverable((el,))
            return
        self.h_out = (self.h_out + 1) & MASK
        queue = self.queue
        if queue:
            queue.append(el)
        else:
            queue = self.queue = [el]
        manager = self.manager
        stream = self.stream
        if stream is None:
            if len(queue) > manager.max_queue:
                manager.api.count_limit("modules.sm.max_queue")
                manager.api.log.info("limit modules.sm.max_queue (%d) reached for detached %s",
                                     manager.max_queue, self.session.jid)
                manager.end(self)
                return
            manager.wake(self.session, [el])  # the client's app may be asleep
            return
        stream.send(el)
        if len(queue) > manager.max_queue:
            manager.api.count_limit("modules.sm.max_queue")
            manager.api.log.info("limit modules.sm.max_queue (%d) reached for %s",
                                 manager.max_queue, self.session.jid)
            stream.stream_error("policy-violation", "too many unacknowledged stanzas")
        elif manager.request_every and len(queue) >= manager.request_every:
            if not self.requested:
                self.request()
        elif manager.request_after and self.timer is None:
            self.timer = manager.loop.call_later(manager.request_after, self._timed_request)

    def request(self) -> None:
        """Ask the client for an acknowledgement (``<r/>``)."""
        if self.stream is not None:
            self.requested = True
            self.stream.send_bytes(_R)

    def _timed_request(self) -> None:
        self.timer = None
        if self.queue and self.stream is not None:
            self.request()
            self.timer = self.manager.loop.call_later(self.manager.request_after,
                                                      self._timed_request)

    # -- input from the stream ------------------------------------------------------------

    def handle(self, stream: Any, el: Element) -> Awaitable | None:
        """An element from the client: a stanza is counted, then handled as usual."""
        if stream is not self.stream:
            return None  # a connection superseded by a resumption, about to close
        if el.ns != CLIENT_NS:
            return stream_extension(self.policy, stream, el)
        self.h_in = (self.h_in + 1) & MASK
        return client_stanza(el, self.session, self.policy.route, self)

    def ack_request(self) -> Awaitable | None:
        """Answer ``<r/>`` once the stanzas counted so far are durable."""
        h = self.h_in
        if not self.session._pending:
            self._send_a(h)
            return None
        return self._ack_when_settled(h)

    async def _ack_when_settled(self, h: int) -> bool:
        await self.session.settled()
        self._send_a(h)
        return True  # handled: stream_extension treats anything else as an unexpected <r/>

    def _send_a(self, h: int) -> None:
        if self.stream is not None:
            self.stream.send_bytes(f"<a xmlns='{SM_NS}' h='{h}'/>".encode())

    def acknowledged(self, h: int) -> bool:
        """The client handled our stanzas up to ``h``: drop them.  False when ``h`` counts
        more than was sent."""
        n = distance(h, self.acked)
        queue = self.queue
        if n > len(queue):
            return False
        if n == len(queue):
            queue = self.queue = ()
        elif n:
            del queue[:n]  # type: ignore[union-attr]  # not (): n < len(queue)
        self.acked = h
        self.requested = False
        if self.waiters is not None and n:
            self.settle_waiters(final=False)
        if not queue and self.timer is not None and self.stream is not None:
            self.timer.cancel()
            self.timer = None
        return True

    def settle_waiters(self, final: bool) -> None:
        """Resolve the :meth:`StreamManagementModule.when_acked` futures that the client's
        ``h`` now covers entirely; with ``final`` (the session ended) all of them, with
        what was acknowledged."""
        waiting = []
        for waiter in self.waiters or ():
            base, offsets, ids, future = waiter
            progress = distance(self.acked, base)
            if final or progress >= max(offsets):
                if self.held is not None:
                    self.held -= ids
                if not future.done():
                    future.set_result([o <= progress for o in offsets])
            else:
                waiting.append(waiter)
        self.waiters = waiting or None
        if not self.held:
            self.held = None

    def stream_closed(self, stream: Any, abrupt: bool) -> None:
        """``stream`` is closing or gone: detach (lost connection, resumable) or end."""
        if stream is not self.stream or self.ended:
            return  # a superseded connection
        if abrupt and self.id is not None and self.window > 0:
            self.manager.detach(self)
        else:
            self.manager.end(self, abrupt)

    def __repr__(self) -> str:
        state = "ended" if self.ended else "detached" if self.stream is None else "attached"
        return f"<StreamManagement {self.session.jid} {state} h_in={self.h_in} h_out={self.h_out}>"


class StreamManagementModule(Module):
    """Advertises ``<sm/>``, answers the XEP-0198 elements, keeps resumable sessions."""

    name = "sm"
    workers_safe = True
    stateful = True  # resumable and detached sessions
    xeps = ("XEP-0198",)
    soft_depends = ("message", "offline")
    options = {
        "resume_timeout_s": Option(
            float, 300.0, "how long a detached session waits to be resumed (also the "
            "largest 'max' a client may ask for, and the 'max' advertised); 0: no resumption",
            min=0, max=86400),
        "handover_timeout_s": Option(
            float, 5.0, "how long a resumption waits for the worker or cluster node that "
            "holds the session to hand it over; then the client is told it failed "
            "(item-not-found) and the session stays there", min=0.1, max=60),
        "max_queue": Option(
            int, 1000, "unacknowledged stanzas kept per session; past it a detached session "
            "expires at once and an attached one is closed", min=1, max=1_000_000),
        "request_every": Option(
            int, 5, "ask for an acknowledgement (<r/>) once this many stanzas are "
            "unacknowledged; 0: never by count", min=0),
        "request_after_s": Option(
            float, 30.0, "ask for an acknowledgement this long after a stanza was sent "
            "unacknowledged; 0: never by time", min=0),
    }

    #: Test hook: where new sessions' counters start (wrap-around tests).
    initial_h = 0

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.router = api.router
        self.loop = asyncio.get_running_loop()
        self._take_options(api.options)
        self.resumable: dict[str, StreamManagement] = {}  # id -> session, until it ends
        self.expired: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # id -> (bare, h)
        self.offline_work: set[asyncio.Future] = set()
        # sessions held by other workers or nodes (found through their shared ids)
        self.elsewhere = ResumeElsewhere(self)
        api.counter("sm_moved_sessions", "stream-management sessions resumed on another "
                    "worker or node (out: handed over from here; in: taken over here)",
                    lambda: {"out": self.elsewhere.handed, "in": self.elsewhere.taken},
                    ("direction",))
        api.on_mirror(self.elsewhere.mirror)
        api.on_ask("resume", self.elsewhere.asked)
        #: a drain (xmppd.drain) closes streams so that clients resume elsewhere
        self.draining = False
        api.hook("stream-features", self.features)
        api.hook("stream/element", self.element)
        api.hook("server-stopping", self.stopping)
        api.hook("server-draining", self.drain)
        api.provide("sm", self)
        api.on_unload(self._unloaded)

    def _take_options(self, opts: Any) -> None:
        self.window: float = opts["resume_timeout_s"]
        self.max_queue: int = opts["max_queue"]
        self.request_every: int = opts["request_every"]
        self.request_after: float = opts["request_after_s"]
        self.handover_timeout: float = opts["handover_timeout_s"]

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        """Sessions that enable (or detach) from now on use the new options."""
        self._take_options(api.options)
        return True

    def features(self, stream: Any, feats: Element) -> None:
        # Not after a Bind2 login that enabled it inline: a client seeing it offered again
        # tries to resume or enable on the bound stream (xmpp.js does), is refused, and
        # gives up stream management for the session.
        if getattr(stream, "sm", None) is None:
            feats.subelement("sm", SM_NS)

    # -- the protocol -----------------------------------------------------------------------

    def element(self, stream: Any, el: Element) -> bool | Awaitable | None:
        if el.ns != SM_NS:
            return False
        name = el.name
        sm: StreamManagement | None = getattr(stream, "sm", None)
        if name == "r":
            if sm is None:
                stream.send_bytes(failed("unexpected-request"))
                return True
            return sm.ack_request() or True
        if name == "a":
            h = parse_h(el.get("h"))
            if sm is None or h is None:
                stream.send_bytes(failed("unexpected-request" if sm is None else "bad-request"))
            elif not sm.acknowledged(h):
                self._count_too_high(stream, h, sm)
            return True
        if name == "enable":
            self.enable(stream, el)
            return True
        if name == "resume":
            return self.resume(stream, el) or True
        stream.send_bytes(failed("feature-not-implemented"))
        return True

    def _count_too_high(self, stream: Any, h: int, sm: StreamManagement) -> None:
        self.count_too_high(stream, h, sm.h_out)

    @staticmethod
    def count_too_high(stream: Any, h: int, sent: int) -> None:
        """The client acknowledged more than was sent: close its stream (XEP-0198 §4)."""
        stream.send_bytes(
            f"<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
            f"<handled-count-too-high xmlns='{SM_NS}' h='{h}' send-count='{sent}'/>"
            f"</stream:error>".encode())
        stream.close_reason = "stream error undefined-condition (handled-count-too-high)"
        stream.close()

    def enable(self, stream: Any, el: Element) -> None:
        stream.send_bytes(self.enable_inline(stream, el))

    def enable_inline(self, stream: Any, el: Element) -> bytes:
        """Enable on ``stream``'s session; the answer (also for XEP-0386 ``<bound/>``)."""
        session = getattr(stream, "session", None)
        if session is None or getattr(stream, "sm", None) is not None:
            return failed("unexpected-request")  # before bind, or twice
        resume = el.get("resume") in ("true", "1") and self.window > 0
        window = self.window
        asked = parse_h(el.get("max"))
        if asked:
            window = min(window, float(asked))
        sm = StreamManagement(self, stream, resume, window, self.initial_h)
        stream.sm = sm
        session.attach(sm)
        if sm.id is not None:
            self.resumable[sm.id] = sm
            self.api.share(session, sm.id)  # other workers and nodes learn where it lives
            attrs = f" id='{sm.id}' resume='true' max='{int(window)}'"
        else:
            attrs = ""
        self.api.log.debug("sm enabled for %s (resumable: %s)", session.jid, resume)
        return f"<enabled xmlns='{SM_NS}'{attrs}/>".encode()

    def resume(self, stream: Any, el: Element,
               reply: Callable[[bytes], None] | None = None) -> Awaitable | None:
        """``<resume/>`` on an authenticated, unbound ``stream``; ``reply`` gets the
        ``<resumed/>`` or ``<failed/>`` (default: written to the stream; SASL2 puts them in
        its ``<success/>``, XEP-0198 §10.2)."""
        send = stream.send_bytes if reply is None else reply
        negotiation = getattr(stream, "negotiation", None)
        if negotiation is None or getattr(stream, "session", None) is not None:
            send(failed("unexpected-request"))  # only instead of binding
            return None
        previd = el.get("previd") or ""
        h = parse_h(el.get("h"))
        sm = self.resumable.get(previd)
        account = (negotiation.username, negotiation.domain)
        if sm is None and previd not in self.expired:
            remote = self.elsewhere.holder(previd)
            if remote is not None and (remote.jid.localpart, remote.jid.domain) == account:
                if h is None:
                    send(failed("bad-request"))
                    return None
                return self.elsewhere.resume(stream, previd, h, account, remote, send)
        if sm is None or sm.ended or previd in self.elsewhere.claimed or \
                (sm.session.jid.localpart, sm.session.jid.domain) != account:
            # Another account's id is answered exactly like an unknown one: no leak.
            gone = self.expired.get(previd)
            known = gone is not None and gone[0] == account and sm is None
            send(failed("item-not-found", gone[1] if known else None))
            return None
        if h is None:
            send(failed("bad-request"))
            return None
        if not sm.acknowledged(h):
            self._count_too_high(stream, h, sm)
            return None
        if sm.session._pending:  # <resumed h/> acknowledges too: wait for durability
            return self._resume_when_settled(stream, sm, send)
        self._resumed(stream, sm, send)
        return None

    async def _resume_when_settled(self, stream: Any, sm: StreamManagement,
                                   send: Callable[[bytes], None]) -> None:
        claimed = self.elsewhere.claimed
        claimed.add(sm.id)  # a resume through another process meanwhile loses
        try:
            await sm.session.settled()
        finally:
            claimed.discard(sm.id)
        if sm.ended or stream.closed or self.resumable.get(sm.id) is not sm:
            send(failed("item-not-found"))
            return
        self._resumed(stream, sm, send)

    # -- resumption of a session held by another worker or node (_sm_handover.py) --------------

    failed_bytes = staticmethod(failed)

    def new_sm(self, stream: Any, resumable: bool, window: float, **kw: Any) -> StreamManagement:
        return StreamManagement(self, stream, resumable, window, **kw)

    def resumed_here(self, stream: Any, sm: StreamManagement, holder: int,
                     send: Callable[[bytes], None]) -> None:
        """A session taken over from ``holder``: attach it to ``stream``."""
        self.api.log.info("sm session %s taken over from %s", sm.session.jid, holder)
        self._resumed(stream, sm, send)

    def _resumed(self, stream: Any, sm: StreamManagement,
                 send: Callable[[bytes], None]) -> None:
        old = sm.stream
        if sm.timer is not None:
            sm.timer.cancel()
            sm.timer = None
        sm.stream = stream
        sm.requested = False
        stream.sm = sm
        stream.bound(sm.session)
        send(f"<resumed xmlns='{SM_NS}' previd='{sm.id}' h='{sm.h_in}'/>".encode())
        for el in sm.queue:  # not counted again: they keep their sequence numbers
            stream.send(el)
        if sm.queue:
            sm.request()
        if old is not None:
            old.stream_error("conflict", "the session was resumed on another connection")
        self.api.log.info("sm resumed: jid=%s re-sent=%d", sm.session.jid, len(sm.queue))

    # -- detach, expire, end ------------------------------------------------------------------

    def detach(self, sm: StreamManagement, notify: bool = True) -> None:
        """The session's connection is gone: wait ``sm.window`` for a resumption
        (``notify``: push notifications for what is unacknowledged, XEP-0357)."""
        sm.stream = None
        if sm.timer is not None:
            sm.timer.cancel()
        sm.timer = self.loop.call_later(sm.window, self.expire, sm)
        if notify and sm.queue:  # the app may not have shown them
            self.wake(sm.session, sm.queue)
        self.api.log.info("sm detached: jid=%s unacknowledged=%d window=%gs",
                          sm.session.jid, len(sm.queue), sm.window)

    def wake(self, session: Any, stanzas: list[Element]) -> None:
        """``stanzas`` wait for the detached ``session``: XEP-0357 push notifications,
        when the ``push`` module is loaded, wake the client's app."""
        push = self.api.service("push")
        if push is not None:
            push.detached(session, stanzas)

    def expire(self, sm: StreamManagement) -> None:
        sm.timer = None
        self.api.log.info("sm resumption window passed: jid=%s", sm.session.jid)
        self.end(sm)

    def end(self, sm: StreamManagement, abrupt: bool = True) -> Awaitable | None:
        """End the session for real: out of the session table (``session-closed``), and
        what the client did not acknowledge handled as undeliverable."""
        if sm.ended:
            return None
        sm.ended = True
        if sm.timer is not None:
            sm.timer.cancel()
            sm.timer = None
        if sm.id is not None and self.resumable.get(sm.id) is sm:
            del self.resumable[sm.id]
            jid = sm.session.jid
            self.expired[sm.id] = ((jid.localpart, jid.domain), sm.h_in)
            if len(self.expired) > EXPIRED_KEPT:
                self.expired.popitem(last=False)
        sm.stream = None
        queue, sm.queue = sm.queue, ()
        if sm.held is not None:  # stored elsewhere until acknowledged: not stored again
            held = sm.held
            queue = [el for el in queue if id(el) not in held]
        sm.policy.unbind(sm.session, abrupt)
        if sm.waiters is not None:
            sm.settle_waiters(final=True)
        return self.undeliverable(queue)

    def when_acked(self, session: Any, stanzas: list[Element]) -> asyncio.Future | None:
        """For stanzas just sent to ``session`` that their sender keeps stored until the
        client has them (offline messages): None if the session has no stream management
        (written to the socket is all one learns), else a future of one bool per stanza,
        True once the client's ``h`` acknowledges it.  It resolves when all are
        acknowledged, or when the session ends (False for the unacknowledged ones, which,
        unlike other unacknowledged messages, are then not handed to ``message/offline``).
        A stanza not in the queue (never sent) counts as acknowledged."""
        sm = session.transport
        if not isinstance(sm, StreamManagement) or sm.ended:
            return None
        future = self.loop.create_future()
        wanted = {id(el) for el in stanzas}
        position = {id(el): i + 1 for i, el in enumerate(sm.queue) if id(el) in wanted}
        if not position:
            future.set_result([True] * len(stanzas))
            return future
        offsets = [position.get(id(el), 0) for el in stanzas]
        ids = set(position)
        if sm.held is None:
            sm.held = set()
        sm.held |= ids
        if sm.waiters is None:
            sm.waiters = []
        sm.waiters.append((sm.acked, offsets, ids, future))
        return future

    def undeliverable(self, stanzas: Iterable[Element]) -> Awaitable | None:
        """Handle stanzas the client never acknowledged as if it were unavailable."""
        messages = []
        for el in stanzas:
            kind, stype = el.name, el.attrs.get("type")
            if kind == "message" and stype in (None, "chat", "normal"):
                messages.append(el)
            elif kind == "iq" and stype in ("get", "set"):
                self.router.bounce(el, "service-unavailable")
        if not messages:
            return None
        task = asyncio.ensure_future(self._to_offline(messages))
        self.offline_work.add(task)
        task.add_done_callback(self._offline_done)
        return task

    async def _to_offline(self, messages: list[Element]) -> None:
        for msg in messages:  # in order: the store keeps arrival order
            try:
                stored = await self.api.fire_async(OFFLINE_EVENT, msg, None)
            except KeyError:  # the message module is not loaded
                stored = False
            if not stored:
                self.router.bounce(msg, "service-unavailable")

    def _offline_done(self, task: asyncio.Future) -> None:
        self.offline_work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.api.log.error("storing unacknowledged messages failed",
                               exc_info=task.exception())

    def drain(self, server: Any) -> None:
        """From now on a resumable session told ``system-shutdown`` is detached, not
        ended (its client resumes it on another node); the drain ends what is still
        detached when it stops the server."""
        self.draining = True

    async def stopping(self, server: Any) -> None:
        """Shutdown: detached sessions end now, their messages stored before storage
        closes (attached ones end with their streams' ``system-shutdown``)."""
        for sm in list(self.resumable.values()):
            if sm.stream is None:
                self.end(sm)
        for _ in range(100):
            if not self.offline_work:
                break
            await asyncio.gather(*list(self.offline_work), return_exceptions=True)

    def _unloaded(self) -> None:
        for sm in list(self.resumable.values()):
            if sm.timer is not None:
                sm.timer.cancel()
                sm.timer = None

    def detached(self) -> list[StreamManagement]:
        """The sessions waiting for resumption (for status and tests)."""
        return [sm for sm in self.resumable.values() if sm.stream is None]
