"""Running a coroutine eagerly: up to its first real suspension, in the caller.

Most handlers only await storage reads that are answered at once; running them in the
caller saves a task, a loop iteration and a pause/resume of the transport per step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


class _Started:
    """The rest of a coroutine that already ran up to its first suspension: awaiting it
    resumes the coroutine where it stopped (results, exceptions and cancellation pass
    through unchanged)."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine, yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                value = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 -- thrown in by the task: pass it on
                step, arg = coro.throw, exc
            else:
                step, arg = coro.send, value
            try:
                yielded = step(arg)
            except StopIteration as stop:
                return stop.value


def start_eagerly(coro: Coroutine) -> Awaitable | None:
    """Run ``coro`` now, up to its first real suspension.

    Returns None when it finished without suspending (its exceptions propagate, its result
    is dropped), else an awaitable for the rest.  Most handlers only await storage reads
    that are answered at once, so this saves a task, a loop iteration and a pause/resume
    of the transport per login step.  Like a task's first step, but run in the caller:
    the coroutine must not need :func:`asyncio.current_task` before it first suspends.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return _Started(coro, yielded)
