"""Which full JIDs live on which worker: every worker keeps a full replica (sans-IO).

A worker announces its binds, unbinds and shared session facts (presence, carbons, roster
interest: see :meth:`xmppd.core.moduleapi.ModuleAPI.share`) to every peer, and sends a
snapshot of its local sessions to a peer that (re)joins.  Sessions of other workers are
:class:`RemoteSession` objects in the router's own session table, so routing and the
modules see local and remote sessions alike.

Resource conflicts are resolved as on one node: the newer bind wins.  "Newer" is the bind
stamp (``time.time_ns()`` at bind), ties broken by the worker number, so every worker
reaches the same verdict from the same two binds whatever order they arrive in: the loser's
own worker ends it with ``conflict`` when it hears of the winner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from xmppd.cluster import frames
from xmppd.core.session import Session
from xmppd.jid import JID

if TYPE_CHECKING:
    from xmppd.core.router import SessionTable
    from xmppd.xml.element import Element


class Peer:
    """What a remote session needs of the link to its worker (see :mod:`.link`); its
    stanzas go into the link's buffer by :func:`frames.link_stanza`, which reads and
    updates ``buffer``, ``max_pending``, ``stanzas`` and ``scheduled``."""

    closed: bool
    buffer: bytearray
    max_pending: int
    stanzas: int
    scheduled: bool

    def stanza(self, to: bytes, element: Element) -> None: ...
    def schedule(self) -> None: ...
    def overflow(self, element: Element) -> None: ...
    def control(self, name: str, args: dict[str, Any]) -> None: ...
    def flush(self) -> None: ...


class RemoteSession(Session):
    """A session bound on another worker; it is its own transport: a stanza sent to it is
    serialized once into the output buffer of the link to that worker."""

    __slots__ = ("worker", "stamp", "link", "to")
    remote = True
    #: keepalive pings only sessions whose connection is here
    heard = None
    peer = None

    def __init__(self, jid: JID, worker: int, stamp: int, link: Peer) -> None:
        self.worker = worker
        self.stamp = stamp
        self.link = link
        self.to = jid.full.encode()
        super().__init__(jid, self)

    #: ``send(element)``: ``self.link.stanza(self.to, element)``, compiled when available
    #: (every stanza routed to another worker or node comes here)
    send = frames.send_remote

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return self.link.closed

    def flush(self) -> None:
        self.link.flush()

    def stream_error(self, condition: str, text: str | None = None) -> None:
        """Ask the session's worker to end it (an administrator's kick, a deleted account)."""
        self.link.control("kick", {"jid": self.jid.full, "condition": condition, "text": text})

    def drop(self, reason: str) -> None:
        self.stream_error("connection-timeout", reason)

    def __repr__(self) -> str:
        return f"<RemoteSession {self.jid} on worker {self.worker}>"


class LocalEntry:
    """What the replicas know of one local session: its bind stamp and shared facts."""

    __slots__ = ("session", "stamp", "shared")

    def __init__(self, session: Session, stamp: int) -> None:
        self.session = session
        self.stamp = stamp
        self.shared: dict[str, Any] | None = None


class Registry:
    """This worker's replica, over the router's session table.

    ``end_local(session)`` is called for a local session that lost a conflict: it must end
    the stream with ``conflict`` and unbind the session (then :meth:`unbind_local` runs).
    """

    def __init__(self, me: int, sessions: SessionTable,
                 end_local: Callable[[Session], None],
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.me = me
        self.sessions = sessions
        self.end_local = end_local
        self.clock = clock
        #: local sessions by full JID text (inbound stanzas are looked up here, no JID parse)
        self.local: dict[str, LocalEntry] = {}
        #: remote sessions by worker, then full JID text
        self.remote: dict[int, dict[str, RemoteSession]] = {}

    # -- local sessions -------------------------------------------------------------------

    def bind_local(self, session: Session, displaced: Session | None, after: int = 0) -> int:
        """``session`` was entered in the table (replacing ``displaced``); its stamp, newer
        than ``after`` (a session taken over must win over its bind elsewhere whatever
        the clocks of the two hosts say)."""
        if displaced is not None and displaced.remote:
            self._forget_remote(displaced)  # type: ignore[arg-type]
        stamp = max(self.clock(), after + 1)
        self.local[session.jid.full] = LocalEntry(session, stamp)
        return stamp

    def unbind_local(self, session: Session) -> bool:
        """``session`` left the table; False if it was not the registered one."""
        full = session.jid.full
        entry = self.local.get(full)
        if entry is None or entry.session is not session:
            return False
        del self.local[full]
        return True

    def share_local(self, session: Session, module: str, value: Any) -> bool:
        entry = self.local.get(session.jid.full)
        if entry is None or entry.session is not session:
            return False
        if entry.shared is None:
            entry.shared = {}
        if value is None:
            entry.shared.pop(module, None)
        else:
            entry.shared[module] = value
        return True

    def snapshot(self) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(full JID, stamp, shared facts) of every local session, for a joining peer."""
        for full, entry in list(self.local.items()):
            yield full, entry.stamp, dict(entry.shared or {})

    # -- remote sessions ------------------------------------------------------------------

    def bind_remote(self, worker: int, full: str, stamp: int, link: Peer) -> RemoteSession | None:
        """A peer bound ``full``; the new remote session, or None if an existing newer
        bind wins (the peer ends its own when it hears of ours)."""
        jid = JID(full)
        existing = self.sessions.get(jid)
        if existing is not None:
            if existing.remote:
                if (existing.stamp, existing.worker) >= (stamp, worker):  # type: ignore[attr-defined]
                    return None
                self._forget_remote(existing)  # type: ignore[arg-type]
                self.sessions.remove(existing)
            else:
                entry = self.local.get(full)
                mine = (entry.stamp if entry is not None else 0, self.me)
                if mine >= (stamp, worker):
                    return None
                self.end_local(existing)
                if self.sessions.get(jid) is existing:  # end_local must have unbound it
                    self.sessions.remove(existing)
                    self.local.pop(full, None)
        session = RemoteSession(jid, worker, stamp, link)
        self.sessions.add(session)
        self.remote.setdefault(worker, {})[full] = session
        return session

    def unbind_remote(self, worker: int, full: str) -> RemoteSession | None:
        session = self.remote.get(worker, {}).pop(full, None)
        if session is not None and self.sessions.get(session.jid) is session:
            self.sessions.remove(session)
        return session

    def find_remote(self, worker: int, full: str) -> RemoteSession | None:
        return self.remote.get(worker, {}).get(full)

    def purge(self, worker: int) -> list[RemoteSession]:
        """A worker is gone: its sessions leave the table; returns them."""
        gone = list(self.remote.pop(worker, {}).values())
        for session in gone:
            if self.sessions.get(session.jid) is session:
                self.sessions.remove(session)
        return gone

    def count(self, worker: int) -> int:
        return len(self.local) if worker == self.me else len(self.remote.get(worker, ()))

    def _forget_remote(self, session: RemoteSession) -> None:
        by_full = self.remote.get(session.worker)
        if by_full is not None and by_full.get(session.jid.full) is session:
            del by_full[session.jid.full]
