"""What the group handlers share: waiting on a coordinator future with a bound."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from node.errors import BrokerError, ErrorCode

T = TypeVar("T")


async def wait_bounded(fut: asyncio.Future[T], timeout_s: float) -> T:
    """The classic state machine answers joins and syncs through futures; a client that gave
    up is not waited for past its own timeout (plus a margin)."""
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
    except TimeoutError:
        fut.cancel()
        raise BrokerError(
            ErrorCode.REBALANCE_IN_PROGRESS, "the rebalance did not end in time"
        ) from None
