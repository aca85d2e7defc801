"""A deterministic asyncio event loop with virtual time, and the process-wide clocks bound to it.

The loop is asyncio's own (its ready queue, timer heap and tasks), with two changes: `time()`
returns the virtual clock, and the selector never waits. When nothing is ready, asyncio asks the
selector to wait until the next timer is due; ours moves the clock there instead and returns at
once, so a second of simulated time costs only the callbacks that run in it. There is no real
I/O (the network and the disk are simulated), so nothing is ever missed by not waiting.

A run is deterministic given its seed: one thread, callbacks in FIFO order, timers in time
order, every random choice from seeded generators, and `virtual_process` binds what the broker
reads of the process (time.time, time.monotonic, uuid4) to the virtual clock and the seed.
No outcome may hang on string hashing (the driver keeps its groups in insertion order, not in
sets: README.md, "Determinism"); the command line still fixes PYTHONHASHSEED=0 as a guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import selectors
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

EPOCH_S = 1_700_000_000.0
"""Wall-clock time (time.time) at virtual time 0: record timestamps look like real ones."""


class Deadlock(RuntimeError):
    """Nothing is ready and nothing is scheduled: the simulation cannot go on."""


class VirtualClock:
    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def wall(self) -> float:
        return EPOCH_S + self.now

    def monotonic(self) -> float:
        return self.now


class _VirtualSelector(selectors._BaseSelectorImpl):  # registration bookkeeping only
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("the simulation has nothing ready and nothing scheduled")
        if timeout > 0:
            # A hair past the timer: `when - now` added back to `now` can fall short of `when`
            # by a rounding error, and code that compares loop.time() with the deadline it
            # scheduled for (the driver's tick) would find itself early and never tick again.
            self._clock.now += timeout + 1e-7
        return []


NODE: contextvars.ContextVar[Any] = contextvars.ContextVar("brokersim_node", default=None)
"""The simulated node whose code is running (set in its tasks' and callbacks' contexts): every
task created under it is registered with it, so a crash can cancel all of them."""


class SimLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self.clock = clock
        self.set_task_factory(self._task_factory)  # type: ignore[arg-type]

    def time(self) -> float:
        return self.clock.now

    @staticmethod
    def _task_factory(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, context=context)
        node = context.get(NODE) if context is not None else NODE.get()
        if node is not None:
            node.own(task)
        return task


@contextlib.contextmanager
def virtual_process(
    clock: VirtualClock, rng: random.Random, on_vital_failure: Callable[[BaseException], None]
) -> Iterator[None]:
    """Bind the clocks and the uuids the broker reads to the simulation, and catch a vital
    task's failure (node/tasks.py's fail_stop would end this process) as a finding."""
    import node.driver
    import node.tasks

    def uuid4() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    saved = (time.time, time.monotonic, uuid.uuid4, node.tasks.fail_stop, node.driver.fail_stop)
    time.time = clock.wall
    time.monotonic = clock.monotonic
    uuid.uuid4 = uuid4
    node.tasks.fail_stop = on_vital_failure
    node.driver.fail_stop = on_vital_failure
    try:
        yield
    finally:
        (time.time, time.monotonic, uuid.uuid4, node.tasks.fail_stop, node.driver.fail_stop) = saved
