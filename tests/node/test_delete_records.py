"""DeleteRecords on real drivers, RocksDB stores and Partitions (tests/node/inproc.py's network):
the log start moves through a replicated entry, so every replica, a restarted one and one
rebuilt from a snapshot agree on it; records below it are no longer served and the disk below
the batches it drops is compacted; bad requests change nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from liferaft_proto import records
from node import replica_state
from node.errors import BrokerError, ErrorCode
from node.offset_index import OffsetIndex
from node.partition import ACKS_ALL, Partition
from node.partition_commands import DeleteRecords, decode, encode, is_command
from node.topic_config import TopicConfig
from tests.node.inproc import Net, Node, until

NEVER = 10**9


def _batch(*values: bytes) -> bytes:
    return records.build_batch([records.Record(value=v) for v in values])


def _partition(node: Node, replicas: list[int]) -> Partition:
    return Partition(
        node_id=node.id,
        topic="t",
        topic_id=1,
        index=0,
        replicas=replicas,
        config=TopicConfig(retention_ms=-1, retention_bytes=-1),
        driver=node.driver,
        rebalance_ticks=NEVER,
        retention_ticks=NEVER,
    )


async def _produce(part: Partition, *batches: tuple[bytes, ...]) -> None:
    for values in batches:
        _, fut = part.produce(_batch(*values), ACKS_ALL)
        assert fut is not None
        await asyncio.wait_for(fut, 20)


def _values(part: Partition, offset: int) -> list[tuple[int, bytes]]:
    """What a reader at `offset` gets, as a client sees it (records before it skipped)."""
    res = part.read(offset, 1 << 20)
    return [
        (r.offset, r.value or b"") for r in records.iter_records(res.records) if r.offset >= offset
    ]


def _code(e: pytest.ExceptionInfo[BrokerError]) -> str:
    return str(ErrorCode.Name(e.value.code))


NINE = ((b"a0", b"a1", b"a2"), (b"b3", b"b4", b"b5"), (b"c6", b"c7", b"c8"))
"""Three batches of three records: offsets 0-2, 3-5, 6-8."""


def test_a_command_entry_is_never_a_record_batch() -> None:
    data = encode(DeleteRecords(offset=7))
    assert is_command(data) and decode(data) == DeleteRecords(offset=7)
    stamped = records.stamp_base_offset(_batch(b"x"), (1 << 63) - 1, leader_epoch=1)
    assert not is_command(stamped) and not is_command(_batch(b"x"))
    with pytest.raises(BrokerError):
        DeleteRecords(offset=-1)


def test_the_offset_index_moves_its_start_inside_a_batch() -> None:
    idx = OffsetIndex()
    for i, base in enumerate((0, 3, 6)):
        idx.append(base, 3, 10 + i, 100, 1000 + i)
    dropped = idx.advance_start(4)
    assert dropped is not None and dropped.base_offset == 0
    assert idx.start_offset == 4 and len(idx) == 2 and idx.locate(3) is None
    assert idx.locate(4) == idx.at(0) and idx.at(0).base_offset == 3
    assert idx.advance_start(2) is None and idx.start_offset == 4  # never down
    last = idx.advance_start(100)  # clamped to the end: everything dropped
    assert last is not None and last.base_offset == 6
    assert (idx.start_offset, idx.end_offset, len(idx)) == (9, 9, 0)
    idx.append(9, 1, 20, 10, 2000)  # the log goes on from there
    assert idx.locate(9) is not None


async def test_every_replica_moves_its_log_start_and_frees_the_disk(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        parts = {i: _partition(net.start(i), [1, 2, 3]) for i in (1, 2, 3)}
        await until(lambda: parts[1].is_leader, "node 1 to lead")
        leader = parts[1]
        await _produce(leader, *NINE)
        before = replica_state.partition_digest(leader, 6, 9)

        # Inside the second batch: the first batch leaves, the second is served from offset 4.
        low = await leader.delete_records_and_wait(4, 20)
        assert low == 4
        await until(
            lambda: all(p.log_start_offset == 4 for p in parts.values()), "log start 4 everywhere"
        )
        for p in parts.values():
            assert p.requested_log_start == 4 and p.high_watermark == 9
            # The first batch is gone from the disk too (a snapshot, then compaction).
            await until(lambda p=p: p.group.storage.first_index() > 1, "compaction")
        with pytest.raises(BrokerError) as e:
            leader.read(3, 1 << 20)
        assert _code(e) == "OFFSET_OUT_OF_RANGE"
        assert _values(leader, 4)[:2] == [(4, b"b4"), (5, b"b5")]
        # Lag is counted from the log start for a committed offset below it (5 records left).
        assert leader.lag(0)[0] == 5 and leader.lag(6)[0] == 3
        # Records at or above the new start are the same bytes on every replica.
        assert {replica_state.partition_digest(p, 6, 9) for p in parts.values()} == {before}

        # -1: the high watermark. Everything goes; the log goes on from there.
        assert await leader.delete_records_and_wait(-1, 20) == 9
        await until(lambda: all(p.log_start_offset == 9 for p in parts.values()), "start 9")
        assert leader.read(9, 1 << 20).records == b""
        await _produce(leader, (b"d9",))
        assert _values(leader, 9) == [(9, b"d9")]
    finally:
        await net.close()


async def test_bad_requests_change_nothing(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        parts = {i: _partition(net.start(i), [1, 2, 3]) for i in (1, 2, 3)}
        await until(lambda: parts[1].is_leader, "node 1 to lead")
        leader = parts[1]
        await _produce(leader, *NINE)
        assert await leader.delete_records_and_wait(3, 20) == 3
        last = leader.group.node.last_index()
        for bad in (10, -2, -100):
            with pytest.raises(BrokerError) as e:
                leader.delete_records(bad)
            assert _code(e) == "OFFSET_OUT_OF_RANGE"
            assert "nothing was deleted" in e.value.message
        # Below (or at) the log start: nothing to do, the current low watermark is the answer.
        assert leader.delete_records(1) == (3, None)
        assert await leader.delete_records_and_wait(3, 20) == 3
        with pytest.raises(BrokerError) as e:
            parts[2].delete_records(5)
        assert _code(e) == "NOT_LEADER" and e.value.leader_id == 1
        await asyncio.sleep(0.1)
        assert leader.group.node.last_index() == last  # nothing was proposed
        assert all(p.log_start_offset == 3 for p in parts.values())
    finally:
        await net.close()


async def test_a_restarted_replica_keeps_its_log_start(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        part = _partition(net.start(1), [1])
        await until(lambda: part.is_leader, "the single replica to lead")
        await _produce(part, *NINE)
        assert await part.delete_records_and_wait(4, 20) == 4
        await until(lambda: part.group.storage.first_index() > 1, "compaction")
        await net.stop(1)

        part = _partition(net.start(1), [1])
        await until(lambda: part.is_leader and part.high_watermark == 9, "serving again")
        assert part.log_start_offset == 4 and part.requested_log_start == 4
        with pytest.raises(BrokerError) as e:
            part.read(3, 1 << 20)
        assert _code(e) == "OFFSET_OUT_OF_RANGE"
        assert _values(part, 4)[0] == (4, b"b4")
        # ListOffsets by time never answers below the log start (b3 is older than b4).
        found = part.offset_for_time(0)
        assert found is not None and found[0] == 4
    finally:
        await net.close()


async def test_a_replica_rebuilt_from_a_snapshot_agrees_on_the_log_start(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        parts = {i: _partition(net.start(i), [1, 2, 3]) for i in (1, 2, 3)}
        await until(lambda: parts[1].is_leader, "node 1 to lead")
        await net.stop(3)
        leader = parts[1]
        await _produce(leader, *NINE)
        # Past two batches: the leader's log now starts after entries node 3 never had.
        assert await leader.delete_records_and_wait(7, 20) == 7
        await until(lambda: leader.group.storage.first_index() > 3, "compaction on the leader")
        await _produce(leader, (b"d9", b"d10"))

        parts[3] = _partition(net.start(3), [1, 2, 3])
        await until(
            lambda: parts[3].high_watermark == 11 and parts[3].log_start_offset == 7,
            "node 3 caught up from a snapshot",
        )
        assert parts[3].group.storage.snapshot().meta.index > 0
        assert parts[3].requested_log_start == 7
        digests = {replica_state.partition_digest(p, 7, 11) for p in parts.values()}
        assert len(digests) == 1
    finally:
        await net.close()
