"""A metrics scrape of one worker answered for every worker: the scraped worker asks each
peer that is up for its samples (control record ``metrics-ask``), each answers with a
snapshot (``metrics-answer``), and the scraped one merges them (:mod:`xmppd.metrics.workers`).
A peer that does not answer within :data:`SCRAPE_TIMEOUT_S` (restarting, stuck) is left
out of that scrape, logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xmppd.cluster.node import Node

log = logging.getLogger(__name__)

#: How long a scrape waits for the other workers' samples.
SCRAPE_TIMEOUT_S = 3.0


class WorkerScrape:
    """Asks ``node``'s peers for their samples; answers theirs with ``snapshot()``."""

    def __init__(self, node: Node, snapshot: Callable[[], Awaitable[Any]]) -> None:
        self.node = node
        self.snapshot = snapshot
        self._ids = itertools.count(1)
        #: scrapes waiting: id -> (future, {peer: snapshot}, peers not answered yet)
        self._waiting: dict[int, tuple[asyncio.Future, dict[int, Any], set[int]]] = {}
        self._answering: set[asyncio.Task] = set()
        node.control_handlers["metrics-ask"] = self._asked
        node.control_handlers["metrics-answer"] = self._answered

    async def gather(self) -> dict[str, Any]:
        """The snapshots of the other workers that are up (``node.workers_up()``: over
        the Unix links, or through Redis when each worker is a cluster member), by worker
        number (as a label)."""
        node = self.node
        labels = node.workers_up()
        asked = set(labels)
        if not asked:
            return {}
        ident = next(self._ids)
        done = asyncio.get_running_loop().create_future()
        answers: dict[str, Any] = {}
        self._waiting[ident] = (done, answers, set(asked))
        for worker in asked:
            node.links[worker].control("metrics-ask", {"id": ident})
        try:
            await asyncio.wait_for(done, SCRAPE_TIMEOUT_S)
        except TimeoutError:
            missing = sorted(labels[w] for w in asked if w not in answers)
            log.warning("metrics: workers %s did not send their samples in %gs: left out "
                        "of this scrape", ", ".join(missing), SCRAPE_TIMEOUT_S)
        finally:
            self._waiting.pop(ident, None)
        return {labels[w]: families for w, families in answers.items()}

    def _asked(self, worker: int, args: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._answer(worker, args.get("id")))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, worker: int, ident: Any) -> None:
        try:
            families = await self.snapshot()
        except Exception:
            log.exception("metrics: reading the samples asked by worker %d", worker)
            families = []
        link = self.node.links.get(worker)
        if link is not None:
            link.control("metrics-answer", {"id": ident, "families": families})

    def _answered(self, worker: int, args: dict[str, Any]) -> None:
        entry = self._waiting.get(args.get("id"))  # type: ignore[arg-type]
        if entry is None:
            return  # too late: that scrape is over
        done, answers, asked = entry
        families = args.get("families")
        answers[worker] = families if isinstance(families, list) else []
        asked.discard(worker)
        if not asked and not done.done():
            done.set_result(None)
