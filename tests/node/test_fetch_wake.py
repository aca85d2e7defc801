"""A fetch waiting at a leader for records (a consumer's FetchStream or long-poll) learns at once
that leadership moved: NOT_LEADER when the node steps down, not at the end of its max_wait_ms.
Real drivers, RocksDB stores and partitions over tests/node/inproc.py's network."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.errors import BrokerError, ErrorCode
from tests.node.inproc import Net, until
from tests.node.test_group_commit import _three

pytestmark = pytest.mark.asyncio


async def test_a_waiting_fetch_ends_with_not_leader_when_leadership_moves(
    tmp_path: Path,
) -> None:
    net = Net(tmp_path)
    try:
        parts = await _three(net)
        leader = parts[1]
        waiting = asyncio.ensure_future(leader.fetch(leader.high_watermark, 1 << 20, 600_000))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # nothing to read: it waits
        leader.group.node.transfer_leader(2)
        net.nodes[1].driver.touched(leader.group.id)
        await until(lambda: parts[2].is_leader, "node 2 to lead")
        with pytest.raises(BrokerError) as e:
            await asyncio.wait_for(waiting, 20)  # not the ten minutes it asked to wait
        assert e.value.code == ErrorCode.NOT_LEADER
    finally:
        await net.close()
