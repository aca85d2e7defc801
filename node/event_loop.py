"""The event loop a node process runs on.

uvloop (libuv's loop, with its transports and TLS written in C) is the default: the node's
hot path is a loop moving many small messages (gRPC streams, Raft frames over TLS, thread
hand-offs for fsyncs), and on it a produce request costs the three nodes about a tenth less CPU
than on the standard library's loop (docs/performance.md, "The event loop"). "asyncio" keeps
the standard loop at hand, to rule the loop out when something looks wrong. Only the process
entry chooses: every module of the node uses plain asyncio APIs and runs on either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from node.config import EVENT_LOOPS

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of the named loop (one of EVENT_LOOPS)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"unknown event loop {name!r}; one of {', '.join(EVENT_LOOPS)}")


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """asyncio.run(main) on the named loop."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        return runner.run(main)
