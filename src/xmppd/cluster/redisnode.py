"""A cluster node: the worker :class:`~xmppd.cluster.node.Node` whose peers are other hosts,
reached through Redis (membership, registry, stanza transport; keys in :mod:`.membership`).

- **Membership.**  A start takes a new *epoch* (``EPOCH_KEY``): the node's identity on the
  wire (the ``worker`` of its records, the key of its remote sessions elsewhere), so an old
  life can never be confused with a new one.  A heartbeat key with a TTL, refreshed every
  ``cluster.heartbeat_s``; every ``cluster.purge_check_s`` each node reads its peers'
  heartbeats, and a missing or changed one makes the peer dead.
- **Registry.**  A node writes each local session's records (bind, shared facts) to its
  hash ``sessions:<epoch>`` (once per loop iteration, pipelined) and publishes the same
  records on the registry channel.  A (re)joining node subscribes first, then loads the hash
  of every live node (its replica), holding what arrives meanwhile and applying it after
  (records are idempotent: a bind with the same stamp changes nothing).
- **Stanzas.**  One PUBLISH per destination node per loop iteration on that node's
  channel, its records in one frame (``NodeLink``); a PUBLISH that reached no subscriber
  (the peer re-subscribing after a Redis restart) is kept and tried again; once the peer is
  declared dead, what is left is routed again (offline storage).
- **Failure.**  A dead peer's sessions leave the replica of every survivor; the survivor
  that wins ``SET dead:<epoch> NX`` fires ``session-closed`` for them (their contacts get
  unavailable presence once) and deletes the life's rows.  Records from a dead epoch are
  ignored.
- **Redis away.**  Local traffic never waits for Redis.  Stanzas for other nodes wait in
  their link's buffer (at most :data:`MAX_PENDING_BYTES` each; beyond, new ones are answered
  ``remote-server-timeout``); the node reconnects with backoff, re-registers (heartbeat,
  its hash written again, a ``join`` with ``rejoin``), reloads every peer's hash, and for
  one TTL after that purges nobody (its peers need that long to re-register).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xmppd.cluster import codec, frames
from xmppd.cluster import membership as m
from xmppd.cluster.link import RecordBuffer
from xmppd.cluster.node import Node
from xmppd.cluster.resp import RedisConnection, RedisError
from xmppd.core.config import redis_address
from xmppd.xml.stanza import decode_stanza

if TYPE_CHECKING:
    from xmppd.core.config import Config
    from xmppd.core.hooks import Hooks
    from xmppd.core.router import Router
    from xmppd.core.session import Session
    from xmppd.xml.element import Element

log = logging.getLogger(__name__)

#: What waits for one peer while Redis is away; beyond it, stanzas for it are bounced.
MAX_PENDING_BYTES = 8 * 1024 * 1024
#: Reconnection delays (seconds), doubling up to the last.
RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
#: A PUBLISH that reached nobody is tried again after this long.
REPUBLISH_S = 0.25
#: How long a dead mark is kept (a node cut off for longer rejoins as a new node anyway).
DEAD_MARK_S = 86400


class NodeLink(RecordBuffer):
    """The way to one peer node life: records buffered and published as one message per
    loop iteration on the peer's channel (the ``Peer`` of its remote sessions)."""

    def __init__(self, node: RedisNode, epoch: int, name: str) -> None:
        self.node = node
        self.worker = epoch
        self.name = name
        self.channel = m.inbox(epoch)
        super().__init__()
        self.max_pending = MAX_PENDING_BYTES
        self.connected = asyncio.Event()
        self.connected.set()
        self.stopped = False
        self.overflowed = 0

    @property
    def closed(self) -> bool:
        return self.stopped

    def overflow(self, element: Element) -> None:
        self.overflowed += 1
        self.node.overflow_bounces += 1
        self.node.router.bounce(element, "remote-server-timeout",
                                "the recipient's node cannot be reached")

    def flush(self) -> None:
        self.scheduled = False
        if self.buffer and not self.stopped:
            self.node.publish(self)

    def take_pending(self) -> list[tuple]:
        return self._take_records()

    def close(self) -> None:
        self.stopped = True


class PeerState:
    """What the node keeps of a peer's incoming side (``Node._records`` reads it)."""

    def __init__(self, epoch: int, name: str) -> None:
        self.worker = epoch
        self.epoch = str(epoch)
        self.name = name
        self.transport = None
        self.bytes_in = 0  # for the metrics
        self.stanzas_in = 0


class RedisNode(Node):
    """This host's node in the cluster of ``config.cluster_redis``."""

    count = 1
    peer_label = "node epoch"

    def __init__(self, config: Config, router: Router, hooks: Hooks, *,
                 end_session: Callable[[Session, str, str | None], None],
                 worker: int | None = None, reload: Callable[[], Any] = lambda: None) -> None:
        """``worker``: this process's number when the host runs several workers
        (``server.workers``): each is a member of its own, named ``<node>/<worker>``."""
        super().__init__(0, 1, None, router, hooks,  # type: ignore[arg-type]
                         end_session=end_session, reload=reload)
        self.host = config.cluster_node
        self.name = self.host if worker is None else f"{self.host}/{worker}"
        self.address = redis_address(config.cluster_redis)
        self.heartbeat_s = config.cluster_heartbeat_s
        self.ttl_ms = int(config.cluster_ttl_s * 1000)
        self.purge_check_s = config.cluster_purge_check_s
        self.cmd: RedisConnection | None = None
        self.sub: RedisConnection | None = None
        self.up = False
        self.names: dict[str, int] = {}  # live peer name -> epoch
        self.dead: set[int] = set()
        self._held: list[bytes] | None = None  # pushes that arrive while loading
        self._loading = 0
        self._grace_until = 0.0
        self._bcast = bytearray()
        self._dirty: set[str] = set()
        self._scheduled = False
        self._tasks: list[asyncio.Task] = []
        self._reconnecting: asyncio.Task | None = None
        self._stopped = False
        self.published = 0  # frames published to peers
        self.republished = 0  # frames that reached nobody, tried again
        self.draining = False  # mark_draining
        self._drain_ttl_ms = 0
        # for the metrics (read at scrape time)
        self.overflow_bounces = 0  # stanzas answered remote-server-timeout (link overflow)
        self.reconnects = 0  # to Redis, after losing it
        self.purges = {True: 0, False: 0}  # peer lives declared dead, by "we announced"

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register in Redis and load the peers; OSError/RedisError if Redis cannot be
        reached now (at run time it may go away: see the module's docstring)."""
        await self._connect(first=True)
        self._unhook.append(self.hooks.hook("session-share", self._share))
        self._tasks = [asyncio.ensure_future(self._every(self.heartbeat_s, self._heartbeat)),
                       asyncio.ensure_future(self._every(self.purge_check_s, self._check))]
        peers = ", ".join(f"{n} (epoch {e})" for n, e in sorted(self.names.items()))
        log.info("cluster node %s started (epoch %d) on redis://%s:%d/%d, peers: %s",
                 self.name, self.me, *self.address, peers or "none")

    async def _connect(self, first: bool) -> None:
        host, port, db = self.address
        cmd = await RedisConnection.open(host, port, db, on_lost=self._lost_redis)
        try:
            now_us = time.time_ns() // 1000
            if first:
                self._new_epoch(await cmd.call("EVAL", m.NEW_EPOCH, 1, m.EPOCH_KEY, now_us))
            else:
                state = await cmd.call("EVAL", m.HEARTBEAT, 2, m.heartbeat_key(self.name),
                                       m.dead_key(self.me), self.me, self.ttl_ms)
                if state == -1:
                    old = self.me
                    self._new_epoch(await cmd.call("EVAL", m.NEW_EPOCH, 1, m.EPOCH_KEY, now_us))
                    log.warning("cluster: this node was declared dead while cut off from "
                                "Redis (epoch %d): it rejoins as epoch %d", old, self.me)
            sub = await RedisConnection.open(host, port, db, on_lost=self._lost_redis,
                                             on_push=self._push)
        except BaseException:
            cmd.close()
            raise
        self.cmd, self.sub = cmd, sub
        try:
            await asyncio.gather(*sub.subscribe_wait(m.inbox(self.me), m.REGISTRY_CHANNEL))
            await self._register(rejoin=not first)
            self.up = True
            if not first:
                self._grace_until = time.monotonic() + self.ttl_ms / 1000
            await self._load_all()
        except BaseException:
            self.up = False
            cmd.close()
            sub.close()
            raise
        for link in self.links.values():
            link.schedule()

    def _new_epoch(self, epoch: int) -> None:
        renewed = self.me != 0
        self.me = self.registry.me = int(epoch)
        self.epoch = str(epoch)
        if renewed:  # what this node owned (the oldest) is another's now
            self.hooks.fire_sync("owners-changed")

    def owner_of(self, key: str) -> int | None:
        """The owner of every room, PubSub service and PEP account: the oldest live node
        (lowest epoch).  A node that joins is never older than the running ones, so
        nothing moves to it; when the owner is purged, each survivor moves on to the next
        oldest as it purges it (stanzas sent to the dead one meanwhile are routed again
        then).  None before this node took its epoch."""
        if not self.me:
            return None
        return min(self.me, *self.inbound) if self.inbound else self.me

    async def _register(self, rejoin: bool) -> None:
        """Heartbeat, the nodes entry, this life's session hash (written again whole), and
        a join on the registry channel."""
        cmd = self.cmd
        assert cmd is not None
        me = self.me
        if rejoin:
            cmd.send("EVAL", m.EPOCH_FLOOR, 1, m.EPOCH_KEY, me)
        cmd.send("DEL", m.sessions_key(me))
        rows: list[Any] = []
        for full in list(self.registry.local):
            rows += (full, self._row(full))
        if rows:
            cmd.send("HSET", m.sessions_key(me), *rows)
        cmd.send("HSET", m.NODES_KEY, self.name, me)
        cmd.send("SET", m.heartbeat_key(self.name), me, "PX", self.ttl_ms)
        if self.draining:
            cmd.send("SET", m.draining_key(me), self.name, "PX", self._drain_ttl_ms)
        self._dirty.clear()
        self._bcast.clear()
        join = bytearray()
        codec.put_control(join, "join", {"name": self.name, "rejoin": rejoin})
        await cmd.call("PUBLISH", m.REGISTRY_CHANNEL, m.SENDER.pack(me) + join)

    def close(self) -> None:
        """Leave the cluster cleanly: the peers forget this life at once."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        for undo in self._unhook:
            undo()
        self._unhook.clear()
        cmd = self.cmd
        if cmd is not None and self.up:
            self._flush_registry()
            leave = bytearray()
            codec.put_control(leave, "leave", {"name": self.name})
            cmd.send("EVAL", m.FORGET, 2, m.NODES_KEY, m.sessions_key(self.me), self.name,
                     self.me)
            for link in self.links.values():  # what this iteration routed to peers goes first
                link.flush()
            cmd.send("DEL", m.heartbeat_key(self.name), m.draining_key(self.me))
            cmd.send("PUBLISH", m.REGISTRY_CHANNEL, m.SENDER.pack(self.me) + leave)
        self.up = False
        for link in self.links.values():
            link.close()
        for conn in (self.cmd, self.sub):
            if conn is not None:
                conn.close()

    def mark_draining(self, timeout_s: float) -> None:
        """Show this node as draining in ``xmppd cluster status`` (until it leaves, or the
        drain's end plus a TTL if it dies meanwhile)."""
        self.draining = True
        self._drain_ttl_ms = int(timeout_s * 1000) + self.ttl_ms
        if self.cmd is not None and self.up:  # else set when it registers again
            self.cmd.send("SET", m.draining_key(self.me), self.name, "PX", self._drain_ttl_ms)

    def status(self) -> dict[str, Any]:
        """This node and its live peers: epoch and session count (control ``status``)."""
        out = {self.name: {"up": self.up, "epoch": self.me, "sessions": len(self.registry.local),
                           "self": True, **({"draining": True} if self.draining else {})}}
        for name, epoch in sorted(self.names.items()):
            out[name] = {"up": True, "epoch": epoch, "sessions": self.registry.count(epoch)}
        return out

    def sessions_by_node(self) -> dict[str, list[str]]:
        """The full JIDs this node knows on each node (its replica)."""
        out = {self.name: sorted(self.registry.local)}
        for name, epoch in self.names.items():
            out[name] = sorted(self.registry.remote.get(epoch, {}))
        return out

    def broadcast_control(self, name: str, args: dict[str, Any]) -> None:
        if name not in ("reload", "drain"):
            super().broadcast_control(name, args)
            return
        for epoch in self.workers_up():  # each host reloads its own file, drains itself
            self.links[epoch].control(name, args)

    def workers_up(self) -> dict[int, str]:
        """The live other workers of this host (members named ``<node>/<i>``): epoch ->
        worker number."""
        prefix = self.host + "/"
        return {epoch: name[len(prefix):] for name, epoch in self.names.items()
                if name.startswith(prefix) and epoch in self.links}

    # -- Redis connection -----------------------------------------------------------------------

    def _lost_redis(self, exc: Exception | None) -> None:
        if self._stopped or self._reconnecting is not None:
            return
        log.warning("cluster: connection to Redis lost (%s); local traffic goes on, "
                    "reconnecting", exc or "closed")
        self.up = False
        self._reconnecting = asyncio.ensure_future(self._reconnect())
        for conn in (self.cmd, self.sub):  # (their on_lost finds the reconnection under way)
            if conn is not None:
                conn.close()

    async def _reconnect(self) -> None:
        attempt = 0
        try:
            while not self._stopped:
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1
                try:
                    await self._connect(first=False)
                except (OSError, RedisError, TimeoutError) as exc:
                    log.debug("cluster: Redis not back yet: %s", exc)
                    continue
                self.reconnects += 1
                log.info("cluster: reconnected to Redis; node %s re-registered (epoch %d), "
                         "peers: %s", self.name, self.me,
                         ", ".join(sorted(self.names)) or "none")
                return
        finally:
            self._reconnecting = None

    async def _every(self, interval: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.up:
                continue
            try:
                await job()
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("cluster: %s", exc)
            except Exception:
                log.exception("cluster: %s failed", getattr(job, "__name__", job))

    async def _heartbeat(self) -> None:
        cmd = self.cmd
        assert cmd is not None
        state = await cmd.call("EVAL", m.HEARTBEAT, 2, m.heartbeat_key(self.name),
                               m.dead_key(self.me), self.me, self.ttl_ms)
        if state == 0:  # Redis lost our registration (restarted without persistence)
            log.warning("cluster: Redis had lost this node's registration: registering again")
            self._grace_until = time.monotonic() + self.ttl_ms / 1000
            await self._register(rejoin=True)
            await self._load_all()
        elif state == -1:  # declared dead: start a new life
            self._lost_redis(None)

    # -- outgoing ------------------------------------------------------------------------------

    def publish(self, link: NodeLink) -> None:
        """Publish ``link``'s buffer as one message (kept while Redis is away)."""
        cmd = self.cmd
        if not self.up or cmd is None:
            return
        body, link.buffer = link.buffer, bytearray()
        self.published += 1
        link.frames += 1
        link.records_bytes += len(body)
        cmd.publish(link.channel, m.SENDER.pack(self.me), body,
                    callback=lambda reply: self._published(link, body, reply))

    def _published(self, link: NodeLink, body: bytearray, reply: Any) -> None:
        if isinstance(reply, int) and reply > 0:
            return
        # Nobody got it (the peer re-subscribing, or dead) or Redis went away: keep it, in
        # order, for the next attempt; a dead peer's is routed again instead.
        self.republished += 1
        if link.stopped:
            self._reroute_records(body)
            return
        link.buffer[:0] = body
        link.schedule(REPUBLISH_S)

    def _reroute_records(self, body: bytes | bytearray) -> None:
        records: list[tuple] = []
        frames.parse_records(body, 0, len(body), records)
        for record in records:
            if record[0] == codec.STANZA:
                with contextlib.suppress(ValueError):
                    # one handed to its owner goes to the owner asked anew (the peer is
                    # purged already); others are routed again from their ``to``
                    (self._reroute if record[1] else self._forwarded)(decode_stanza(record[2]))

    def _announce(self, full: str, write: Callable[[bytearray], None]) -> None:
        write(self._bcast)
        self._dirty.add(full)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_registry)

    def forget_row(self, full: str) -> None:
        """Drop the row of a session that left quietly (handed over to another node)."""
        self._dirty.add(full)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_registry)

    def _flush_registry(self) -> None:
        """This iteration's binds, unbinds and shares: one PUBLISH, one pipelined write of
        the rows (while Redis is away both wait for the re-registration, which writes the
        whole hash again)."""
        self._scheduled = False
        cmd = self.cmd
        if not self.up or cmd is None:
            return
        if self._bcast:
            body, self._bcast = self._bcast, bytearray()
            cmd.send("PUBLISH", m.REGISTRY_CHANNEL, m.SENDER.pack(self.me) + body)
        key, rows, gone = m.sessions_key(self.me), [], []
        for full in self._dirty:
            if full in self.registry.local:
                rows += (full, self._row(full))
            else:
                gone.append(full)
        self._dirty.clear()
        if rows:
            cmd.send("HSET", key, *rows)
        if gone:
            cmd.send("HDEL", key, *gone)

    def _row(self, full: str) -> bytes:
        entry = self.registry.local[full]
        out = bytearray()
        codec.put_bind(out, full, self.me, entry.stamp)
        for module, value in (entry.shared or {}).items():
            codec.put_share(out, full, module, value)
        return bytes(out)

    # -- incoming ------------------------------------------------------------------------------

    def _push(self, channel: bytes, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
            return
        self._message(data)

    def _message(self, data: bytes) -> None:
        if len(data) < 8:
            return
        (sender,) = m.SENDER.unpack_from(data)
        if sender == self.me or sender in self.dead:
            return  # our own broadcast, or a life that was declared dead (fenced)
        records: list[tuple] = []
        try:
            frames.parse_records(data, 8, len(data), records)
        except codec.CodecError as exc:
            log.error("cluster: unreadable message from epoch %d: %s", sender, exc)
            return
        if records and records[0][0] == codec.CONTROL and records[0][1] in ("join", "leave"):
            name, args = records[0][1], records[0][2]
            if name == "leave":
                asyncio.ensure_future(self._purge(sender, "it left the cluster"))
            else:
                self._joined(sender, str(args.get("name")), bool(args.get("rejoin")))
            records = records[1:]
        peer = self.inbound.get(sender)
        if peer is None:
            if records:
                log.debug("cluster: %d records from unknown epoch %d ignored",
                          len(records), sender)
            return
        peer.bytes_in += len(data)
        if records:
            self._records(peer, records)  # type: ignore[arg-type]

    def _joined(self, epoch: int, name: str, rejoin: bool) -> None:
        old = self.names.get(name)
        if old is not None and old != epoch:
            if old > epoch:
                return  # an older life speaking late: ignored
            asyncio.ensure_future(self._purge(old, "it restarted"))
        if epoch not in self.inbound:
            log.info("cluster: node %s joined (epoch %d)", name, epoch)
        self._peer(epoch, name)
        if rejoin:  # its rows were written again: they replace what we have of it
            asyncio.ensure_future(self._load_guarded([(name, epoch)]))

    def _peer(self, epoch: int, name: str) -> PeerState:
        peer = self.inbound.get(epoch)
        if peer is None:
            older = epoch < self.owner_of("") if self.me else False
            peer = self.inbound[epoch] = PeerState(epoch, name)  # type: ignore[assignment]
            self.links[epoch] = NodeLink(self, epoch, name)  # type: ignore[assignment]
            self.names[name] = epoch
            self.epochs[epoch] = str(epoch)
            if older:  # (two nodes started together: the younger one learns it here)
                self.hooks.fire_sync("owners-changed")
        return peer  # type: ignore[return-value]

    async def _load_all(self) -> None:
        """Every live node's rows into the replica; nodes that are gone are purged (after
        the grace time that follows a reconnection)."""
        cmd = self.cmd
        assert cmd is not None
        flat = await cmd.call("HGETALL", m.NODES_KEY)
        known = [(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]
        known = [(n, e) for n, e in known if n != self.name and e not in self.dead]
        beats = await asyncio.gather(*(cmd.call("GET", m.heartbeat_key(n)) for n, _ in known))
        live = [(n, int(b)) for (n, _), b in zip(known, beats, strict=True) if b is not None]
        await self._load_guarded(live)
        if time.monotonic() >= self._grace_until:
            alive = {e for _, e in live}
            for name, epoch in known:
                if epoch not in alive:  # registered, no heartbeat: a dead life's rows
                    await self._purge(epoch, "its heartbeat expired", name=name)
            for epoch in list(self.inbound):
                if epoch not in alive:
                    await self._purge(epoch, "it is no longer registered")

    async def _load_guarded(self, nodes: list[tuple[str, int]]) -> None:
        """Load ``nodes``' rows, holding incoming messages until they are applied."""
        cmd = self.cmd
        if cmd is None or not nodes:
            return
        self._loading += 1
        if self._held is None:
            self._held = []
        try:
            replies = await asyncio.gather(
                *(cmd.call("HGETALL", m.sessions_key(e)) for _, e in nodes))
            for (name, epoch), flat in zip(nodes, replies, strict=True):
                if epoch in self.dead or epoch == self.me:
                    continue
                self._apply_rows(self._peer(epoch, name), flat)
        finally:
            self._loading -= 1
            if not self._loading:
                held, self._held = self._held or [], None
                for data in held:
                    self._message(data)

    def _apply_rows(self, peer: PeerState, flat: list[bytes]) -> None:
        """A peer's rows replace our replica of its sessions."""
        epoch = peer.worker
        rows = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        for full in list(self.registry.remote.get(epoch, {})):
            if full not in rows:
                self.registry.unbind_remote(epoch, full)
        records: list[tuple] = []
        for value in rows.values():
            try:
                codec.parse_records(value, 0, len(value), records)
            except codec.CodecError as exc:
                log.error("cluster: unreadable row of node %s: %s", peer.name, exc)
        if records:
            self._records(peer, records)  # type: ignore[arg-type]

    # -- peers that go --------------------------------------------------------------------------

    async def _check(self) -> None:
        """Purge every peer whose heartbeat no longer holds its epoch."""
        if time.monotonic() < self._grace_until or not self.names:
            return
        cmd = self.cmd
        assert cmd is not None
        peers = list(self.names.items())
        beats = await asyncio.gather(*(cmd.call("GET", m.heartbeat_key(n)) for n, _ in peers))
        for (_name, epoch), beat in zip(peers, beats, strict=True):
            if beat is None or int(beat) != epoch:
                await self._purge(epoch, "its heartbeat expired")

    async def _purge(self, epoch: int, why: str, name: str | None = None) -> None:
        """Declare ``epoch`` dead: its sessions leave the replica; the survivor that takes
        the dead mark announces their end and deletes the life's rows."""
        if epoch in self.dead or epoch == self.me:
            return
        self.dead.add(epoch)
        peer = self.inbound.pop(epoch, None)
        name = peer.name if peer is not None else name or "?"
        if self.names.get(name) == epoch:
            del self.names[name]
        announce = False
        cmd = self.cmd
        if cmd is not None and self.up:
            try:
                reply = await cmd.call("SET", m.dead_key(epoch), self.me, "NX", "EX",
                                       DEAD_MARK_S)
                announce = reply == b"OK"
                if announce:
                    cmd.send("EVAL", m.FORGET, 2, m.NODES_KEY, m.sessions_key(epoch), name,
                             epoch)
            except RedisError as exc:
                log.warning("cluster: cannot mark epoch %d dead: %s", epoch, exc)
        self.purges[announce] += 1
        link = self.links.get(epoch)
        if link is not None:
            link.close()
        if peer is not None or link is not None:
            self._peer_gone(epoch, f"node {name}: {why}", announce)
        self.links.pop(epoch, None)
        self.epochs.pop(epoch, None)
