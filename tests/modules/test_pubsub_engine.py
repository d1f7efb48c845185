"""The pubsub engine over both storage backends: subscriptions under keys of their own
(a subscribe writes one small key, never the node record), the write-through node cache
(bounded, cold after a restart, tombstones for deleted nodes) and the move of
subscriptions that an older xmppd embedded in the node record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import run_storage

from xmppd.modules._pubsub import PubSubError
from xmppd.modules._pubsub.engine import NODE_KEY, SUBS_KEY, Engine, Limits
from xmppd.storage import Storage
from xmppd.storage.stores import encode_value

SVC = "pubsub.example.com"
CONFIG = {"access_model": "open", "max_items": 10}


class Recording:
    """A key-value store that records what is written and read through it."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.writes: list[tuple[str, str, str, int]] = []  # (method, owner, key, bytes)
        self.reads: list[tuple[str, str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    async def get(self, owner: str, key: str, default: Any = None) -> Any:
        self.reads.append(("get", owner, key))
        return await self.kv.get(owner, key, default)

    async def items(self, owner: str) -> dict[str, Any]:
        self.reads.append(("items", owner, ""))
        return await self.kv.items(owner)

    async def set(self, owner: str, key: str, value: Any) -> None:
        self.writes.append(("set", owner, key, len(encode_value(value))))
        await self.kv.set(owner, key, value)

    async def delete(self, owner: str, key: str) -> bool:
        self.writes.append(("delete", owner, key, 0))
        return await self.kv.delete(owner, key)

    async def update(self, owner: str, key: str, fn: Any) -> tuple[Any, Any]:
        old, new = await self.kv.update(owner, key, fn)
        self.writes.append(("update", owner, key, 0 if new is None else len(encode_value(new))))
        return old, new


def engine_of(storage: Storage, **kw: Any) -> Engine:
    return Engine(storage.open_store("pubsub"), storage.open_store("pubsub", "archive"),
                  Limits(), **kw)


def subscriber(n: int) -> tuple[str, str]:
    return f"u{n}@example.com/r", f"u{n}@example.com"


def test_a_subscribe_writes_one_small_key_and_reads_no_node_record(make_storage):
    async def body(storage: Storage) -> None:
        engine = engine_of(storage)
        kv = engine.kv = Recording(engine.kv)
        await engine.create(SVC, "big", dict(CONFIG), "owner@example.com")
        kv.writes.clear()
        kv.reads.clear()
        subids = {}
        for n in range(300):
            jid, bare = subscriber(n)
            subids[jid] = (await engine.subscribe(SVC, "big", jid, bare, "subscribed"))["subid"]
        # per subscribe: the subscription's own key and the subscriber's index; the node
        # record is neither read (it is cached) nor written, whatever the node's size
        assert {(m, o) for m, o, _, _ in kv.writes} == {
            ("set", f"{SVC}/big"), *(("update", subscriber(n)[1]) for n in range(300))}
        assert max(size for *_, size in kv.writes) < 100
        assert not [r for r in kv.reads if r[1] == SVC or r[1].startswith(SVC + "/")]
        stored = await storage.open_store("pubsub").get(SVC, NODE_KEY + "big")
        assert "subscriptions" not in stored
        # a restart: a cold cache reads the node and its subscriptions once
        again = engine_of(storage)
        again.kv = Recording(again.kv)
        record = await again.must_node(SVC, "big")
        assert {j: s["subid"] for j, s in record["subscriptions"].items()} == subids
        for _ in range(3):
            await again.node(SVC, "big")
        assert [r for r in again.kv.reads if r[1] in (SVC, f"{SVC}/big")] == [
            ("get", SVC, NODE_KEY + "big"), ("items", f"{SVC}/big", "")]

    run_storage(make_storage, body)


def test_unsubscribe_options_affiliations_and_delete(make_storage):
    async def body(storage: Storage) -> None:
        engine = engine_of(storage)
        kv = storage.open_store("pubsub")
        await engine.create(SVC, "n", dict(CONFIG), "owner@example.com")
        for n in range(4):
            await engine.subscribe(SVC, "n", *subscriber(n), "subscribed")
        await engine.set_options(SVC, "n", subscriber(0)[0], {"deliver": False})
        with pytest.raises(PubSubError, match="unexpected-request"):
            await engine.set_options(SVC, "n", "nobody@example.com", {"deliver": False})
        assert await engine.unsubscribe(SVC, "n", subscriber(1)[0])
        assert not await engine.unsubscribe(SVC, "n", subscriber(1)[0])
        assert await kv.get(subscriber(1)[1], SUBS_KEY) is None
        await engine.set_affiliation(SVC, "n", subscriber(2)[1], "outcast")
        assert await kv.get(subscriber(2)[1], SUBS_KEY) is None
        cold = engine_of(storage)
        record = await cold.must_node(SVC, "n")
        assert sorted(record["subscriptions"]) == [subscriber(0)[0], subscriber(3)[0]]
        assert record["subscriptions"][subscriber(0)[0]]["options"] == {"deliver": False}
        assert record["affiliations"][subscriber(2)[1]] == "outcast"
        assert await cold.subscriptions_of(subscriber(3)[1], SVC) == [
            ("n", subscriber(3)[0], record["subscriptions"][subscriber(3)[0]])]
        await engine.delete(SVC, "n")
        assert await engine.node(SVC, "n") is None
        assert await kv.items(f"{SVC}/n") == {}
        assert await kv.get(subscriber(0)[1], SUBS_KEY) is None
        # the same name again is a new node, without the old subscriptions
        await engine.create(SVC, "n", dict(CONFIG), "owner@example.com")
        assert (await engine.must_node(SVC, "n"))["subscriptions"] == {}
        assert (await engine_of(storage).must_node(SVC, "n"))["subscriptions"] == {}

    run_storage(make_storage, body)


def test_the_cache_is_bounded_and_account_deletion_forgets(make_storage):
    async def body(storage: Storage) -> None:
        engine = engine_of(storage, cache_size=3)
        owner = "juliet@example.com"  # a PEP owner: its nodes go with its account
        for n in range(8):
            await engine.create(owner, f"n{n}", dict(CONFIG), owner)
            await engine.subscribe(owner, f"n{n}", *subscriber(n), "subscribed")
        assert len(engine.cache) <= 3
        for n in range(8):
            record = await engine.must_node(owner, f"n{n}")
            assert list(record["subscriptions"]) == [subscriber(n)[0]]
        assert len(engine.cache) <= 3
        # equal configurations share one dict; a change makes the node a config of its own
        n0, n1 = await engine.must_node(owner, "n0"), await engine.must_node(owner, "n1")
        assert n0["config"] is n1["config"]
        await engine.configure(owner, "n0", {"title": "zero"})
        assert (await engine.must_node(owner, "n0"))["config"]["title"] == "zero"
        assert "title" not in (await engine.must_node(owner, "n1"))["config"]
        assert (await engine_of(storage).must_node(owner, "n0"))["config"]["title"] == "zero"
        await engine.forget_account(subscriber(7)[1])
        assert (await engine.must_node(owner, "n7"))["subscriptions"] == {}
        engine.forget_owner(owner)
        await storage.delete_user_data(owner)  # as account deletion does
        assert await engine.node(owner, "n6") is None
        assert await storage.open_store("pubsub").items(f"{owner}/n6") == {}

    run_storage(make_storage, body)


def test_concurrent_subscribes_on_a_cold_node(make_storage):
    async def body(storage: Storage) -> None:
        await engine_of(storage).create(SVC, "hot", dict(CONFIG), "owner@example.com")
        engine = engine_of(storage)  # cold: every subscribe below starts with a load
        await asyncio.gather(*(engine.subscribe(SVC, "hot", *subscriber(n), "subscribed")
                               for n in range(200)))
        assert len((await engine.must_node(SVC, "hot"))["subscriptions"]) == 200
        assert len((await engine_of(storage).must_node(SVC, "hot"))["subscriptions"]) == 200

    run_storage(make_storage, body)


def test_subscriptions_embedded_by_an_older_version_are_moved(make_storage):
    async def body(storage: Storage) -> None:
        kv = storage.open_store("pubsub")
        subs = {subscriber(n)[0]: {"state": "subscribed", "subid": f"s{n}"} for n in range(700)}
        subs[subscriber(0)[0]]["options"] = {"deliver": False}
        await kv.set(SVC, NODE_KEY + "old", {
            "config": dict(CONFIG), "affiliations": {"owner@example.com": "owner"},
            "subscriptions": subs, "creator": "owner@example.com"})
        for n in range(700):
            await kv.set(subscriber(n)[1], SUBS_KEY, [[SVC, "old", subscriber(n)[0]]])
        engine = engine_of(storage)
        record = await engine.must_node(SVC, "old")
        assert record["subscriptions"] == subs
        stored = await kv.get(SVC, NODE_KEY + "old")
        assert "subscriptions" not in stored and stored["creator"] == "owner@example.com"
        assert await kv.items(f"{SVC}/old") == subs
        assert await engine.unsubscribe(SVC, "old", subscriber(5)[0])
        await engine.subscribe(SVC, "old", *subscriber(700), "pending")
        again = await engine_of(storage).must_node(SVC, "old")
        assert subscriber(5)[0] not in again["subscriptions"]
        assert again["subscriptions"][subscriber(700)[0]]["state"] == "pending"
        assert again["subscriptions"][subscriber(0)[0]]["options"] == {"deliver": False}
        assert len(again["subscriptions"]) == 700

    run_storage(make_storage, body)
