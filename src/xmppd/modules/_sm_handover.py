"""XEP-0198 resumption of a session held by another worker or cluster node (``sm``).

Which process holds which stream-management id is a shared session fact: the holder
shares the id of each resumable session (``api.share``), so every worker's and node's
replica of the session registry (and, across hosts, the session rows in Redis) knows it;
a resume for an id held by a live peer is sent there (``api.ask``).  The id itself stays
opaque: it does not change when the session moves, and it is found wherever it lives.

The holder checks what a local resume checks (a known, unexpired id of the same account;
a valid ``h``; pending writes settled), detaches the session (an old connection still
attached gets ``conflict``), and answers with its state: full JID, counters, the
unacknowledged stanzas in order, and every module's piece (``api.export_session``:
presence, directed presence, carbons, CSI, roster and block-list interest, ``+notify``).
It keeps the session as a forwarding tombstone (``api.hand_over``) until the new bind
arrives; no unavailable presence, nothing stored offline.  The asking process binds the
session (``api.adopt_session``: announced like a bind, newer than the old one), gives the
modules their state, answers ``<resumed/>`` and sends the queue again; what the holder
forwarded after its answer arrives after it, in order.

Failures answer ``<failed><item-not-found/>``: the holder gone or unknown, the id unknown,
another account's (never revealed), a second concurrent resume of the id (the first one
wins), no answer within ``handover_timeout_s`` (the holder then refuses the request if it
reads it after that deadline: its session stays detached there).  An answer that arrives
after the timeout (in flight meanwhile) is not lost: the session is adopted detached and
waits for its client like any other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from xmppd.jid import JID, JIDError
from xmppd.xml.stanza import CLIENT_NS, decode_stanza

#: Sequence numbers are unsigned 32-bit (XEP-0198 §4).
MASK = 0xFFFFFFFF
#: A queue larger than this stays where it is (the client binds anew; the session
#: expires there): the state travels as one record of a link frame (at most 64 MiB).
MAX_STATE_BYTES = 16 * 1024 * 1024


class ResumeElsewhere:
    """The cross-process part of the ``sm`` module (``module``: its instance)."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.api = module.api
        #: stream-management id -> the remote session that holds it (from shared facts)
        self.remote_ids: dict[str, Any] = {}
        self._pruned_at = 0
        #: ids whose hand-over waits for durable writes (a second request loses)
        self.claimed: set[str] = set()
        self.handed = 0  # sessions handed to another process
        self.taken = 0  # sessions taken over from one

    # -- the index of ids held elsewhere ------------------------------------------------------

    def mirror(self, session: Any, value: Any) -> None:
        """Another process shares the id of its resumable ``session``."""
        if isinstance(value, str) and value:
            self.remote_ids[value] = session
            if len(self.remote_ids) > 2 * self._pruned_at + 64:
                self._prune()

    def _prune(self) -> None:
        sessions = self.api.router.sessions
        self.remote_ids = {i: s for i, s in self.remote_ids.items() if sessions.get(s.jid) is s}
        self._pruned_at = len(self.remote_ids)

    def holder(self, previd: str) -> Any:
        """The remote session that holds ``previd`` now, or None."""
        session = self.remote_ids.get(previd)
        if session is None:
            return None
        if self.api.router.sessions.get(session.jid) is not session:
            del self.remote_ids[previd]
            return None
        return session

    # -- the new side: ask the holder ------------------------------------------------------------

    def resume(self, stream: Any, previd: str, h: int, account: tuple[str, str],
               remote: Any, send: Callable[[bytes], None]) -> asyncio.Future:
        """Ask ``remote``'s process for the session; the stream waits for the future
        (``send`` writes the ``<resumed/>`` or ``<failed/>``)."""
        module, api = self.module, self.api
        done = asyncio.get_running_loop().create_future()
        timeout = module.handover_timeout
        args = {"previd": previd, "user": account[0], "domain": account[1], "h": h,
                "deadline": time.time_ns() + int(timeout * 1e9)}
        holder = remote.worker

        def answered(answer: Any, late: bool) -> None:
            if isinstance(answer, dict) and "jid" in answer:
                try:
                    sm = self.adopt(previd, answer, stream.policy, holder)
                except (AttributeError, KeyError, TypeError, ValueError, JIDError):
                    api.log.exception("unreadable session state from %s", holder)
                    sm = None
                if sm is not None and not late and not stream.closed:
                    module.resumed_here(stream, sm, holder, send)
                elif sm is not None:
                    api.log.info("sm session %s taken over from %s after its client left: "
                                 "detached here", sm.session.jid, holder)
                    answer = None
            if late:
                return
            if not (isinstance(answer, dict) and "jid" in answer):
                self._failed(stream, answer, holder, send)
            if not done.done():
                done.set_result(True)

        api.ask(holder, "resume", args, timeout, answered)
        return done

    def _failed(self, stream: Any, answer: Any, holder: int,
                send: Callable[[bytes], None]) -> None:
        module = self.module
        if isinstance(answer, dict) and answer.get("error") == "handled-count-too-high":
            module.count_too_high(stream, int(answer.get("h", 0)), int(answer.get("sent", 0)))
            return
        if answer is None:
            self.api.log.info("sm resume refused: holder %s not reachable in time", holder)
        h = answer.get("h") if isinstance(answer, dict) else None
        send(module.failed_bytes("item-not-found", h if isinstance(h, int) else None))

    def adopt(self, previd: str, state: dict[str, Any], policy: Any, holder: int) -> Any:
        """Bind the session described by ``state`` here, detached; its StreamManagement."""
        module, api = self.module, self.api
        jid = JID(state["jid"])
        queue = [decode_stanza(xml.encode()) for xml in state["queue"]]
        sm = module.new_sm(None, True, float(state["window"]), session=None, policy=policy,
                           previd=previd)
        sm.h_in, sm.h_out, sm.acked = (int(state[k]) & MASK for k in ("h_in", "h_out", "acked"))
        sm.queue = queue or ()
        session = api.adopt_session(jid, sm, int(state["stamp"]), holder)
        sm.session = session
        module.resumable[previd] = sm
        self.remote_ids.pop(previd, None)
        api.share(session, previd)
        states = state.get("states")
        api.import_session(session, states if isinstance(states, dict) else {})
        module.detach(sm, notify=False)  # taken over to be resumed here at once
        self.taken += 1
        return sm

    # -- the holder's side -------------------------------------------------------------------

    def asked(self, peer: int, args: dict[str, Any]) -> Any:
        """A peer's client resumes one of our sessions: its state, or why not."""
        module = self.module
        previd = str(args.get("previd", ""))
        account = (args.get("user"), args.get("domain"))
        h = args.get("h")
        sm = module.resumable.get(previd)
        if sm is None or sm.ended or previd in self.claimed or \
                (sm.session.jid.localpart, sm.session.jid.domain) != account:
            gone = module.expired.get(previd)
            known = gone is not None and sm is None and gone[0] == account
            return {"error": "item-not-found", "h": gone[1] if known else None}
        if not isinstance(h, int) or not 0 <= h <= MASK:
            return {"error": "item-not-found"}
        if not sm.acknowledged(h):
            return {"error": "handled-count-too-high", "h": h, "sent": sm.h_out}
        deadline = args.get("deadline")
        deadline = deadline if isinstance(deadline, int) else 0
        if sm.session._pending:  # the stanzas h counts must be durable first
            self.claimed.add(previd)
            return self._give_when_settled(sm, peer, deadline)
        return self._give(sm, peer, deadline)

    async def _give_when_settled(self, sm: Any, peer: int, deadline: int) -> dict[str, Any]:
        try:
            await sm.session.settled()
        finally:
            self.claimed.discard(sm.id)
        if sm.ended or self.module.resumable.get(sm.id) is not sm:
            return {"error": "item-not-found"}
        return self._give(sm, peer, deadline)

    def _give(self, sm: Any, peer: int, deadline: int) -> dict[str, Any]:
        module, api = self.module, self.api
        if time.time_ns() > deadline or not api.peer_up(peer):
            # Read too late: the asker answered its client already; the session stays.
            api.log.info("sm resume of %s for %s came too late: refused", sm.session.jid, peer)
            return {"error": "item-not-found"}
        queue = [el.to_bytes(CLIENT_NS).decode() for el in sm.queue]
        if sum(map(len, queue)) > MAX_STATE_BYTES:
            api.log.warning("sm session %s not handed over to %s: %d unacknowledged stanzas "
                            "are too large to move", sm.session.jid, peer, len(queue))
            return {"error": "item-not-found"}
        old = sm.stream
        sm.stream = None
        if sm.timer is not None:
            sm.timer.cancel()
            sm.timer = None
        session = sm.session
        sent = len(sm.queue)
        states = api.export_session(session)  # (CSI puts what it held into the queue)
        queue += [el.to_bytes(CLIENT_NS).decode() for el in sm.queue[sent:]]
        del module.resumable[sm.id]
        sm.ended = True
        sm.queue = ()
        if sm.waiters is not None:  # the stanzas are the new holder's to deliver now
            for _base, offsets, _ids, future in sm.waiters:
                if not future.done():
                    future.set_result([True] * len(offsets))
            sm.waiters = sm.held = None
        stamp = api.hand_over(session, peer)
        if old is not None:
            old.stream_error("conflict", "the session was resumed on another connection")
        self.handed += 1
        api.log.info("sm session %s handed over to %s: %d unacknowledged", session.jid,
                     peer, len(queue))
        return {"jid": session.jid.full, "h_in": sm.h_in, "h_out": sm.h_out,
                "acked": sm.acked, "window": sm.window, "queue": queue, "states": states,
                "stamp": stamp}
