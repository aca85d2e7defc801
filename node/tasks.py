"""Background tasks that cannot die silently: every asyncio task of a node is started here.

Why: asyncio keeps only a weak reference to a task and says nothing of a task's exception until
the task is garbage collected (if then), so a loop that raised once (the housekeeping that
gossips leaders, registers brokers and reports health) simply stopped and the node carried on
without it. `supervise` holds a strong reference to every task, and when one fails it logs the
cause with its traceback and then does what its owner chose:

- restart=True: run the coroutine factory again after a backoff (loops that must keep going:
  housekeeping, the transport's dialers and liveness watch);
- on_failure=fail_stop: the node cannot go on (its Raft driver): log and exit, as a failed WAL
  sync does (the node is restarted from its durable state, like after a crash);
- otherwise on_failure, if given, is called after logging (best-effort one-shot work, e.g. a
  proposal that may fail with NOT_CONTROLLER: `expected` names the errors logged without a
  traceback).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

log = logging.getLogger("liferaft.tasks")

__all__ = ["FAIL_STOP_EXIT_CODE", "fail_stop", "running", "supervise"]

FAIL_STOP_EXIT_CODE = 70
RESTART_BACKOFF_S = (0.05, 5.0)
"""First and largest pause before a failed loop is run again (it doubles in between)."""

_running: set[asyncio.Task[Any]] = set()


def running() -> set[asyncio.Task[Any]]:
    """The supervised tasks not yet done (for tests and diagnostics)."""
    return set(_running)


def fail_stop(exc: BaseException) -> None:
    """The node cannot go on without this task: exit at once (no graceful hand-off: the state
    it would hand off is what failed). Supervisors restart the process from its disk."""
    log.critical("a vital task failed (%s: %s): stopping the node", type(exc).__name__, exc)
    logging.shutdown()
    os._exit(FAIL_STOP_EXIT_CODE)


def supervise(
    work: Coroutine[Any, Any, Any] | Callable[[], Coroutine[Any, Any, Any]],
    name: str,
    *,
    restart: bool = False,
    on_failure: Callable[[BaseException], None] | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> asyncio.Task[Any]:
    """Run `work` (a coroutine, or with restart=True a function making one) as a task named
    `name` that is watched: a failure is logged with its cause, then restarted or reported to
    `on_failure`. Cancelling the returned task stops it (and any restart) quietly."""
    if restart:
        if not callable(work) or asyncio.iscoroutine(work):
            raise TypeError("supervise(restart=True) needs a function that makes the coroutine")
        coro: Coroutine[Any, Any, Any] = _restarting(work, name)
    else:
        if not asyncio.iscoroutine(work):
            raise TypeError("supervise() needs a coroutine (or restart=True and a function)")
        coro = work
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(lambda t: _done(t, on_failure, expected))
    return task


async def _restarting(make: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
    backoff = RESTART_BACKOFF_S[0]
    while True:
        try:
            await make()
            return
        except Exception:
            log.exception("task %s failed; restarting it in %.2f s", name, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, RESTART_BACKOFF_S[1])


def _done(
    task: asyncio.Task[Any],
    on_failure: Callable[[BaseException], None] | None,
    expected: tuple[type[BaseException], ...],
) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        return
    if isinstance(exc, expected):
        log.info("task %s ended: %s: %s", task.get_name(), type(exc).__name__, exc)
    else:
        log.error("task %s failed", task.get_name(), exc_info=exc)
    if on_failure is not None:
        on_failure(exc)


async def stop_listener(server: asyncio.Server | None, connections: set[asyncio.Task[Any]]) -> None:
    """A client listener's stop (the Kafka and stream listeners): accept no more, cancel every
    connection's task and wait for them, then for the server, at most a second: a client that
    does not answer the close must not hold up the node's stop."""
    if server is not None:
        server.close()
    for task in list(connections):
        task.cancel()
    for task in list(connections):
        with suppress(asyncio.CancelledError, Exception):
            await task
    if server is not None:
        with suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)
