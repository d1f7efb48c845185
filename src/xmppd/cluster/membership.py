"""What a cluster keeps in Redis, and the operator's view of it (``xmppd cluster status``).

Keys (all under ``xmppd:``; a deployment that shares a Redis gives each cluster its own
database number in ``cluster.redis``):

====================  ===========================================================================
``epoch``             the epoch counter: a node start takes the next value (never below the
                      current time in µs, so a Redis that lost its data cannot hand out an
                      epoch again)
``node:<name>``       the heartbeat: the node's live epoch, expiring after ``cluster.ttl_s``
``nodes``             hash: node name → the epoch it last registered (status, purge)
``sessions:<epoch>``  hash: full JID → the records of one session of that node life (its
                      bind, its shared facts: :mod:`~xmppd.cluster.codec`)
``draining:<epoch>``  set while that node life drains (``xmppd drain``), expiring after the
                      drain's timeout plus ``cluster.ttl_s``; deleted when it leaves
``dead:<epoch>``      set by the one survivor that purges a node life (``NX``: the lock that
                      makes it the only one announcing the sessions' end); a node that finds
                      its own there was declared dead and takes a new epoch
====================  ===========================================================================

Channels: ``xmppd:registry`` (every node's binds, unbinds, shared facts, joins and leaves)
and ``xmppd:to:<epoch>`` (records for one node life: stanzas, kicks, acknowledgements).
A message on either is an 8-byte sender epoch, then records.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from xmppd.cluster.resp import RedisConnection, RedisError
from xmppd.core.config import Config, redis_address
from xmppd.core.manager import plan

PREFIX = "xmppd:"
EPOCH_KEY = PREFIX + "epoch"
NODES_KEY = PREFIX + "nodes"
REGISTRY_CHANNEL = PREFIX + "registry"
SENDER = struct.Struct(">Q")

#: KEYS[1] epoch counter; ARGV[1] the floor (now, µs): the next epoch.
NEW_EPOCH = """local e = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if e < floor then redis.call('SET', KEYS[1], ARGV[1]); e = floor end
return e"""
#: KEYS[1] epoch counter; ARGV[1] an epoch in use: the counter never falls below it.
EPOCH_FLOOR = """local e = tonumber(redis.call('GET', KEYS[1]) or '0')
if e < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1"""
#: KEYS[1] heartbeat, KEYS[2] dead mark; ARGV epoch, ttl (ms).  -1: this life was declared
#: dead (or a newer life of the name exists); 0: refreshed but it was missing (Redis lost
#: it: re-register); 1: refreshed.
HEARTBEAT = """if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and tonumber(cur) > tonumber(ARGV[1]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if cur == ARGV[1] then return 1 end
return 0"""
#: KEYS[1] nodes hash, KEYS[2] the life's sessions; ARGV name, epoch: forget that life.
FORGET = """redis.call('DEL', KEYS[2])
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1"""


def heartbeat_key(name: str) -> str:
    return f"{PREFIX}node:{name}"


def sessions_key(epoch: int) -> str:
    return f"{PREFIX}sessions:{epoch}"


def dead_key(epoch: int) -> str:
    return f"{PREFIX}dead:{epoch}"


def draining_key(epoch: int) -> str:
    return f"{PREFIX}draining:{epoch}"


def inbox(epoch: int) -> str:
    return f"{PREFIX}to:{epoch}"


def cluster_problems(config: Config) -> list[str]:
    """Why ``config`` cannot run as a cluster node (empty: it can, or no cluster)."""
    if not config.cluster_redis:
        return []
    problems = []
    storage = config.storage_url
    if not storage.startswith("postgresql") and not config.cluster_allow_local_storage:
        kind = "memory:" if storage.startswith("memory:") else "SQLite"
        problems.append(f"cluster.redis is set but server.storage is {kind}: the nodes must "
                        "share their storage (server.storage = \"postgresql://...\")")
    try:
        planned = [p.cls for p in plan(config)]
    except Exception:  # reported on its own (xmppd check, the server's start)
        planned = []
    # (muc, pubsub and pep keep their state in one owner: the oldest node, see
    # RedisNode.owner_of)
    unsafe = [m.name for m in planned if not m.workers_safe]
    if unsafe:
        problems.append(f"cluster.redis: these modules cannot run on several nodes yet: "
                        f"{', '.join(unsafe)} (disable them)")
    if config.components:
        problems.append("cluster.redis: external components (XEP-0114) cannot be served by "
                        "a cluster yet (a component connects to one node)")
    return problems


async def cluster_status(url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every node Redis knows: name, epoch, alive (its heartbeat holds that epoch), the
    sessions of that life, and whether it is draining.  OSError/RedisError when Redis cannot be asked."""
    host, port, db = redis_address(url)
    conn = await RedisConnection.open(host, port, db, timeout=timeout)
    try:
        flat = await asyncio.wait_for(conn.call("HGETALL", NODES_KEY), timeout)
        nodes = sorted((flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2))
        beats = [conn.call("GET", heartbeat_key(name)) for name, _ in nodes]
        counts = [conn.call("HLEN", sessions_key(epoch)) for _, epoch in nodes]
        drains = [conn.call("EXISTS", draining_key(epoch)) for _, epoch in nodes]
        beats_done = await asyncio.wait_for(asyncio.gather(*beats), timeout)
        counts_done = await asyncio.wait_for(asyncio.gather(*counts), timeout)
        drains_done = await asyncio.wait_for(asyncio.gather(*drains), timeout)
    finally:
        conn.close()
    return [{"node": name, "epoch": epoch, "alive": beat is not None and int(beat) == epoch,
             "sessions": count, "draining": bool(draining)}
            for (name, epoch), beat, count, draining
            in zip(nodes, beats_done, counts_done, drains_done, strict=True)]


__all__ = ["RedisError", "cluster_problems", "cluster_status"]
