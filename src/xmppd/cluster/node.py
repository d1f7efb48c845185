"""A worker's end of the cluster: its links to the other workers, its replica of the
session registry, and what it does with the records its peers send.

One stanza's way to a session on another worker: the router delivers to a
:class:`~xmppd.cluster.registry.RemoteSession` (the sender's worker has run the hooks that
decide, e.g. §8.5 for a bare JID, from its replica), which serializes it into the link's
buffer; at the end of the iteration the buffer goes out as one frame; the peer builds each
stanza from its start tag (:func:`~xmppd.cluster.frames.stanza_element`: the content stays
the bytes that came, which the recipient gets as they are) and delivers it to its local session
(:meth:`xmppd.core.router.Router.deliver`: ``stanza/inbound`` hooks such as CSI run there).
A stanza whose session has gone meanwhile is routed again from its ``to`` (another
resource, or offline storage): never delivered twice, never dropped.

When a peer's connection ends, its sessions leave the replica; one survivor (the lowest
worker number still up) fires ``session-closed`` for them, so their contacts get
unavailable presence once, and new messages for them go to offline storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmppd.cluster import codec, frames
from xmppd.cluster.handover import HandOvers, Requests
from xmppd.cluster.link import Inbound, PeerLink
from xmppd.cluster.registry import Registry, RemoteSession
from xmppd.core.session import Session
from xmppd.jid import JID, JIDError
from xmppd.transport.stream import writes_plain
from xmppd.xml.element import Element
from xmppd.xml.events import TokenizerError
from xmppd.xml.stanza import CLIENT_NS, decode_stanza

if TYPE_CHECKING:
    from xmppd.core.hooks import Hooks
    from xmppd.core.router import Router

log = logging.getLogger(__name__)

_STANZA = codec.STANZA


#: How long a "data changed" broadcast waits for the peers' acknowledgements.
CHANGE_TIMEOUT_S = 2.0


def socket_file(directory: Path, worker: int) -> Path:
    """Where worker ``worker`` listens for its peers."""
    return directory / f"worker-{worker}.sock"


def _parse_stanza(peer: int, data: bytes) -> Element | None:
    """A STANZA record's XML that is not in the serializer's plain form (a namespaced
    attribute...): parsed and checked by the tokenizer; None (logged) if it does not parse."""
    try:
        element = decode_stanza(data)
    except (ValueError, TokenizerError) as exc:
        log.error("peer %d sent a stanza that does not parse (%s): dropped", peer, exc)
        return None
    element.keep_wire(data, CLIENT_NS)
    return element


#: transport class -> whether its ``send`` only buffers the element's bytes in
#: ``jabber:client`` (:func:`~xmppd.transport.stream.plain_send`): a stanza from a peer
#: may then be written to it as the bytes that came (``send_bytes``)
_PLAIN: dict[type, bool] = {}


def _plain(transport: Any) -> bool:
    plain = _PLAIN[type(transport)] = bool(writes_plain(transport))
    return plain


class Node:
    """Worker ``me`` of ``count``, its peers' sockets in ``directory``."""

    #: what a peer is called in the log (a cluster node says "node epoch")
    peer_label = "worker"

    def __init__(self, me: int, count: int, directory: Path, router: Router, hooks: Hooks,
                 *, end_session: Callable[[Session, str, str | None], None],
                 reload: Callable[[], Any]) -> None:
        self.me = me
        self.count = count
        self.directory = directory
        self.router = router
        self.hooks = hooks
        self._end_session = end_session
        self._reload = reload
        self.epoch = f"{os.getpid()}-{time.time_ns()}"
        self.registry = Registry(me, router.sessions, self._lost_conflict)
        self.links: dict[int, PeerLink] = {}
        self.inbound: dict[int, Inbound] = {}  # by worker, once it said hello
        self.epochs: dict[int, str] = {}
        self.pids: dict[int, int] = {}
        self._server: asyncio.AbstractServer | None = None
        self._unhook: list[Callable[[], None]] = []
        self.received = 0  # stanzas received from them
        self.rerouted = 0  # received for a session gone meanwhile, routed again
        self.forwarded_on = 0  # stanzas handed as they are to their owner worker
        #: "data changed" broadcasts awaiting the peers' acknowledgements, by id
        self._changes: dict[int, tuple[asyncio.Future, set[int]]] = {}
        self._change_ids = itertools.count(1)
        #: questions to peers (:mod:`.handover`), and sessions handed over to one
        self.requests = Requests(self)
        self.handovers = HandOvers(self)
        #: the peer whose records are being handled now (a session taken over lets its
        #: old holder's stanzas through first: handover.Holding)
        self.receiving_from: int | None = None
        #: what a peer's "drain" control runs (``xmppd drain`` asked of worker 0)
        self.on_drain: Callable[[dict[str, Any]], Any] | None = None
        #: other control records, by name: ``handler(worker, args)`` (``cluster.scrape``)
        self.control_handlers: dict[str, Callable[[int, dict[str, Any]], Any]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        path = socket_file(self.directory, self.me)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this worker's previous life
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: Inbound(self._records, self._lost), str(path))
        os.chmod(path, 0o600)
        self._unhook.append(self.hooks.hook("session-share", self._share))
        for worker in range(self.count):
            if worker != self.me:
                link = PeerLink(worker, socket_file(self.directory, worker), self._hello)
                self.links[worker] = link
                link.start()
        log.info("worker %d of %d started (epoch %s), peers: %s", self.me, self.count,
                 self.epoch, ", ".join(map(str, self.links)) or "none")

    async def wait_peers(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every peer link is up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(link.connected.wait() for link in self.links.values())),
                timeout)

    def close(self) -> None:
        for undo in self._unhook:
            undo()
        self._unhook.clear()
        for link in self.links.values():
            link.close()
        if self._server is not None:
            self._server.close()
        for inbound in list(self.inbound.values()):
            if inbound.transport is not None:
                inbound.transport.close()
        with contextlib.suppress(OSError):
            socket_file(self.directory, self.me).unlink()

    def status(self) -> dict[str, Any]:
        """Workers, whether each is up, and their session counts (for ``xmppd status``)."""
        return {str(w): {"up": w == self.me or w in self.inbound,
                         "sessions": self.registry.count(w),
                         "epoch": self.epoch if w == self.me else self.epochs.get(w),
                         "pid": os.getpid() if w == self.me else self.pids.get(w)}
                for w in range(self.count)}

    # -- local changes, told to every peer ------------------------------------------------------

    def bound(self, session: Session, displaced: Session | None, after: int = 0) -> None:
        """``session`` was bound here (replacing ``displaced``); ``after``: its stamp must
        be newer than that (a session taken over from a peer: its bind there)."""
        stamp = self.registry.bind_local(session, displaced, after)
        full, me = session.jid.full, self.me
        self._announce(full, lambda buf: codec.put_bind(buf, full, me, stamp))

    def unbound(self, session: Session) -> None:
        if not self.registry.unbind_local(session):
            return
        full, me = session.jid.full, self.me
        self._announce(full, lambda buf: codec.put_unbind(buf, full, me))

    def _share(self, session: Session, module: str, value: Any) -> None:
        if session.remote:
            return
        if isinstance(value, Element):
            value = codec.XML(value.to_bytes("jabber:client"))
        if not self.registry.share_local(session, module, value):
            return
        full = session.jid.full
        self._announce(full, lambda buf: codec.put_share(buf, full, module, value))

    def _announce(self, full: str, write: Callable[[bytearray], None]) -> None:
        """Tell every peer of a change of the local session ``full`` (``write`` appends
        its record to a buffer)."""
        for link in self.links.values():
            link.records(write)

    def _hello(self, buf: bytearray) -> None:
        """What a peer gets first on a new connection: who we are, then our sessions."""
        codec.put_control(buf, "hello", {"worker": self.me, "epoch": self.epoch,
                                         "pid": os.getpid()})
        me = self.me
        for full, stamp, shared in self.registry.snapshot():
            codec.put_bind(buf, full, me, stamp)
            for module, value in shared.items():
                codec.put_share(buf, full, module, value)

    def workers_up(self) -> dict[int, str]:
        """The other workers that are up: peer id -> worker number (as a label)."""
        return {w: str(w) for w in self.inbound if self.links[w].connected.is_set()}

    def broadcast_control(self, name: str, args: dict[str, Any]) -> None:
        for link in self.links.values():
            link.control(name, args)

    def owner_of(self, key: str) -> int | None:
        """The worker that owns ``key``: a stable hash over the workers (a dead owner's
        stanzas wait for its restart)."""
        return 0 if self.count == 1 else zlib.crc32(key.encode()) % self.count

    def forward(self, worker: int, stanza: Element) -> None:
        """Hand ``stanza`` as it is to ``worker`` (a STANZA record without recipient: the
        peer routes it again).  While that worker is down it waits in the link's buffer;
        a peer that is no more (a cluster node purged meanwhile): routed again here, where
        its owner is asked anew."""
        link = self.links.get(worker)
        if link is None or link.closed:
            asyncio.get_running_loop().call_soon(self._forwarded, stanza)
            return
        self.forwarded_on += 1
        link.stanza(b"", stanza)

    async def changed(self, module: str, owner: str, key: str) -> None:
        """Tell every peer that ``module``'s data of ``owner`` changed; return once each
        peer that is up acknowledged (it dropped its cached copy), or after
        :data:`CHANGE_TIMEOUT_S` (logged)."""
        waiting = {w for w in self.inbound if self.links[w].connected.is_set()}
        ident = next(self._change_ids)
        args = {"module": module, "owner": owner, "key": key, "id": ident}
        for link in self.links.values():
            link.control("changed", args)
        if not waiting:
            return
        done = asyncio.get_running_loop().create_future()
        self._changes[ident] = (done, waiting)
        try:
            await asyncio.wait_for(done, CHANGE_TIMEOUT_S)
        except TimeoutError:
            log.warning("workers %s did not acknowledge a change of %s data of %s in %.0f s",
                        sorted(waiting), module, owner, CHANGE_TIMEOUT_S)
        finally:
            self._changes.pop(ident, None)

    async def _ack_after(self, pending: Any, worker: int, ack: dict[str, Any]) -> None:
        try:
            await pending
        except Exception:
            log.exception("applying a change told by worker %d", worker)
        self.links[worker].control("changed-ack", ack)

    def _acknowledged(self, worker: int, ident: Any) -> None:
        entry = self._changes.get(ident) if isinstance(ident, int) else None
        if entry is None:
            return
        done, waiting = entry
        waiting.discard(worker)
        if not waiting and not done.done():
            done.set_result(None)

    # -- records from peers ---------------------------------------------------------------------

    def _records(self, inbound: Inbound, records: list[tuple]) -> None:
        if inbound.worker is None:
            first = records[0]
            if first[0] != codec.CONTROL or first[1] != "hello":
                log.error("worker link: the first record is not a hello; closing it")
                if inbound.transport is not None:
                    inbound.transport.close()
                return
            self._hello_from(inbound, first[2])
            records = records[1:]
        worker = inbound.worker
        assert worker is not None
        outer, self.receiving_from = self.receiving_from, worker
        try:
            self._apply(worker, inbound, records)
        finally:
            self.receiving_from = outer

    def _apply(self, worker: int, inbound: Inbound, records: list[tuple]) -> None:
        local = self.registry.local
        router = self.router
        deliver = router.deliver
        stanza_element = frames.stanza_element
        received = 0
        # The quiet way (as Router.route_quiet_message's locally): a stanza for a local
        # session whose account no stanza/inbound handler acts for, with none of their
        # payloads, to a stream that only buffers what it sends (plain_send, in
        # jabber:client), is written to it as the bytes that came: no element is built.
        # frames.send_quiet writes such a run and stops at the first other record, taken
        # here the general way (a peer's stanzas keep their order).
        hooks = self.hooks
        gate = hooks.gate("stanza/inbound")
        quick = gate is not None and CLIENT_NS not in gate[1]
        if quick:
            need, _payloads, encoded = gate
            send_quiet, quiet = frames.send_quiet, hooks.quiet
        messages = presences = iqs = 0
        i, n = 0, len(records)
        while i < n:
            if quick:
                i, m, p, q = send_quiet(records, i, local, quiet, need, encoded, _PLAIN, _plain)
                messages += m
                presences += p
                iqs += q
                if i == n:
                    break
            record = records[i]
            i += 1
            kind = record[0]
            if kind == _STANZA:
                # built from its start tag: the content stays the bytes that came (what
                # the recipient gets, not written again), parsed only if someone reads it
                element = stanza_element(record[2])
                if element is None:
                    element = _parse_stanza(worker, record[2])
                    if element is None:
                        continue
                received += 1
                entry = local.get(record[1])
                if entry is not None:
                    deliver(entry.session, element)
                elif not record[1]:
                    self._forwarded(element)
                else:
                    self._reroute(element)
            elif kind == codec.BIND:
                link = self.links.get(record[2])
                if link is not None:
                    session = self.registry.bind_remote(record[2], record[1], record[3], link)
                    if session is not None:
                        self.hooks.fire_sync("remote-bound", session)
            elif kind == codec.UNBIND:
                self.registry.unbind_remote(record[2], record[1])
            elif kind == codec.SHARE:
                self._mirror(worker, record[1], record[2], record[3])
            elif kind == codec.CONTROL:
                self._control(worker, record[1], record[2])
        quiet_sent = messages + presences + iqs
        if quiet_sent:
            received += quiet_sent
            delivered = router.delivered
            for name, count in (("message", messages), ("presence", presences), ("iq", iqs)):
                if count:
                    delivered[name] += count
            hooks.skipped["stanza/inbound"] += quiet_sent
        inbound.stanzas_in += received
        self.received += received

    def _hello_from(self, inbound: Inbound, args: dict[str, Any]) -> None:
        worker, epoch = args.get("worker"), args.get("epoch")
        if not isinstance(worker, int) or worker not in self.links:
            log.error("worker link: hello from an unknown worker %r; closing it", worker)
            if inbound.transport is not None:
                inbound.transport.close()
            return
        old = self.inbound.get(worker)
        if old is not None and old is not inbound:
            # A new life of that worker (a new epoch) before we saw the old one's end.
            old.on_lost = lambda _inbound: None
            if old.transport is not None:
                old.transport.close()
            self._peer_gone(worker, "restarted")
        inbound.worker, inbound.epoch = worker, str(epoch)
        self.inbound[worker] = inbound
        self.epochs[worker] = str(epoch)
        pid = args.get("pid")
        if isinstance(pid, int):
            self.pids[worker] = pid
        log.info("worker %d joined (epoch %s, pid %s)", worker, epoch, args.get("pid"))

    def _mirror(self, worker: int, full: str, module: str, value: Any) -> None:
        session = self.registry.find_remote(worker, full)
        if session is None:
            return
        if isinstance(value, codec.XML):
            try:
                value = decode_stanza(bytes(value))
            except ValueError:
                log.error("worker %d shared unreadable XML for %s", worker, full)
                return
        self.hooks.fire_sync("session-mirror", session, module, value)

    def _control(self, worker: int, name: str, args: dict[str, Any]) -> None:
        if name == "changed":
            result = self.hooks.fire_maybe_async(
                "data-changed", str(args.get("module")), str(args.get("owner")),
                str(args.get("key", "")))
            ack = {"id": args.get("id")}
            if result is True or result is False:
                self.links[worker].control("changed-ack", ack)
            else:  # a module refreshes its copy first
                asyncio.ensure_future(self._ack_after(result, worker, ack))
        elif name == "changed-ack":
            self._acknowledged(worker, args.get("id"))
        elif name == "kick":
            entry = self.registry.local.get(args.get("jid", ""))
            if entry is not None:
                entry.session.stream_error(args.get("condition") or "policy-violation",
                                           args.get("text"))
        elif name == "reload":
            self._reload()
        elif name == "request":
            self.requests.requested(worker, args)
        elif name == "reply":
            self.requests.answered(worker, args)
        elif name == "handover-flush":
            self.handovers.drain(worker, args.get("jid"))
        elif name == "handover-flushed":
            self.handovers.drained(args.get("jid"))
        elif name == "drain" and self.on_drain is not None:
            self.on_drain(args)
        elif name in self.control_handlers:
            self.control_handlers[name](worker, args)
        else:
            log.warning("worker link: unknown control record %r", name)

    def _forwarded(self, element: Element) -> None:
        """A stanza a peer handed us as it is (we own its room, service or PEP owner):
        routed with the sender's session as origin when we know it."""
        origin = None
        sender = element.attrs.get("from")
        if sender:
            with contextlib.suppress(JIDError):
                origin = self.router.sessions.get(JID(sender))
        result = self.router.route(element, origin)
        if result is not None:
            asyncio.ensure_future(result)

    def _reroute(self, element: Element) -> None:
        """A stanza for a session that is gone: route it again from its ``to``."""
        self.rerouted += 1
        self.router.route_from_server(element)

    # -- peers that go --------------------------------------------------------------------------

    def _lost(self, inbound: Inbound) -> None:
        worker = inbound.worker
        if worker is None or self.inbound.get(worker) is not inbound:
            return
        del self.inbound[worker]
        self._peer_gone(worker, "its connection ended")

    def _peer_gone(self, worker: int, why: str, announce: bool | None = None) -> None:
        """``worker``'s sessions leave the replica; ``announce``: whether this one fires
        their ``session-closed`` (default: if it is the lowest-numbered survivor)."""
        gone = self.registry.purge(worker)
        if announce is None:
            survivors = [w for w in (self.me, *self.inbound) if w != worker]
            announce = min(survivors) == self.me
        log.warning("%s %d is gone (%s): %d of its sessions removed%s", self.peer_label,
                    worker, why,
                    len(gone), "; announcing their unavailability" if announce else "")
        if announce:
            for session in gone:
                self._closed(session)
        for done, waiting in self._changes.values():
            waiting.discard(worker)
            if not waiting and not done.done():
                done.set_result(None)
        self.hooks.fire_sync("worker-gone", worker, gone)
        self.requests.peer_gone(worker)
        self.handovers.peer_gone(worker)
        link = self.links.get(worker)
        for record in link.take_pending() if link is not None else ():
            if record[0] == codec.STANZA:
                try:
                    element = decode_stanza(record[2])
                except ValueError:
                    continue
                # one handed to its owner waits for that worker's restart; others go on
                (self._reroute if record[1] else self._forwarded)(element)

    def _closed(self, session: RemoteSession) -> None:
        result = self.hooks.fire_maybe_async("session-closed", session, True)
        if result is not True and result is not False:
            asyncio.ensure_future(result)

    def _lost_conflict(self, session: Session) -> None:
        """A newer bind of the same full JID on another worker wins over ``session`` (or
        takes over a session handed to it: that one leaves quietly)."""
        if not self.handovers.take(session):
            self._end_session(session, "conflict", "replaced by a new session")

    def end_local(self, session: Session, condition: str, text: str | None) -> None:
        """End a local session's stream and unbind it (``session-closed`` fires)."""
        self._end_session(session, condition, text)

    # -- session hand-over (:mod:`.handover`) ---------------------------------------------------

    def peer_up(self, peer: int) -> bool:
        """Is ``peer`` (a worker number, a node epoch) a live peer now?"""
        return peer != self.me and peer in self.inbound and peer in self.links

    def hand_over(self, session: Session, peer: int) -> int:
        """``session``'s state went to ``peer``: forward what still reaches it there until
        the peer's bind arrives; returns its bind stamp (the peer's must be newer)."""
        return self.handovers.hand_over(session, peer)

    def taken_over(self, session: Session, source: int) -> None:
        """``session`` was taken over from ``source``: in order with what it forwards."""
        self.handovers.hold(session, source)

    def forget_row(self, full: str) -> None:
        """A session that left quietly (handed over): a node that stores rows drops its."""
