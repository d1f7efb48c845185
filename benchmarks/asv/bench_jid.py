"""asv suite: JID preparation, compiled and pure twins, cached and uncached."""

from __future__ import annotations

import importlib

IMPLS = ["xmppd._speedups.jid", "xmppd.jid._pure"]


def _load(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise NotImplementedError(f"{name} is not built") from None  # asv skips it


def _dataset(kind: str, count: int) -> list[str]:
    if kind == "ascii":
        return [f"user{i}@example{i % 10}.com/resource{i}" for i in range(count)]
    if kind == "ascii-mixed-case":
        return [f"User{i}@Example{i % 10}.COM/Resource{i}" for i in range(count)]
    return [f"j\u00fcrgen{i}@m\u00fcnchen{i % 10}.example/H\u00e4nde{i}" for i in range(count)]


class TimeJIDCached:
    """1000 JIDs whose preparations are all in the cache."""

    params = (IMPLS, ["ascii", "ascii-mixed-case", "non-ascii"])
    param_names = ["impl", "kind"]

    def setup(self, impl: str, kind: str) -> None:
        self.mod = _load(impl)
        self.data = _dataset(kind, 1000)
        self.mod.cache_clear()
        for text in self.data:
            self.mod.JID(text)

    def time_jid(self, impl: str, kind: str) -> None:
        jid = self.mod.JID
        for text in self.data:
            jid(text)

    def time_normalize(self, impl: str, kind: str) -> None:
        normalize = self.mod.normalize
        for text in self.data:
            normalize(text)


class TimeJIDUncached:
    """Twice as many distinct JIDs as the cache holds: oldest-first eviction misses them all."""

    params = (IMPLS, ["ascii", "non-ascii"])
    param_names = ["impl", "kind"]
    number = 1
    repeat = 3

    def setup(self, impl: str, kind: str) -> None:
        self.mod = _load(impl)
        self.data = _dataset(kind, 2 * self.mod.CACHE_SIZE)
        self.mod.cache_clear()

    def time_jid(self, impl: str, kind: str) -> None:
        jid = self.mod.JID
        for text in self.data:
            jid(text)


class TimeJIDViews:
    """The accessors the router uses on every stanza."""

    params = IMPLS
    param_names = ["impl"]

    def setup(self, impl: str) -> None:
        self.jid = _load(impl).JID("juliet@example.com/balcony")

    def time_bare(self, impl: str) -> object:
        return self.jid.bare

    def time_domain(self, impl: str) -> object:
        return self.jid.domain

    def time_hash(self, impl: str) -> None:
        hash(self.jid)
