"""Group commit of proposals (issue 18): the produce requests of one partition that reach the
leader between two driver rounds go into the log as ONE entry holding their batches, each with
its own base offset, producer id and sequence, and its own answer. Built on real drivers,
RocksDB stores and partitions over tests/node/inproc.py's network.

Every test produces several batches without awaiting between them (as handlers do between two
rounds), then checks what the log, the followers, fetch and the waiters make of them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from liferaft_proto import records
from node.driver import RaftTiming
from node.errors import BrokerError, ErrorCode
from node.partition import ACKS_ALL, ACKS_LEADER, ACKS_NONE, Partition
from node.partition_commands import is_command
from node.topic_config import TopicConfig
from raft import EntryType
from tests.node.inproc import Net, Node, until

pytestmark = pytest.mark.asyncio

NEVER = 10**9


def _batch(*values: bytes, pid: int = -1, seq: int = -1) -> bytes:
    recs = [records.Record(value=v) for v in values]
    if pid < 0:
        return records.build_batch(recs)
    return records.build_batch(recs, producer_id=pid, producer_epoch=0, base_sequence=seq)


def _partition(node: Node) -> Partition:
    return Partition(
        node_id=node.id,
        topic="t",
        topic_id=1,
        index=0,
        replicas=[1, 2, 3],
        config=TopicConfig(),
        driver=node.driver,
        rebalance_ticks=NEVER,
        retention_ticks=NEVER,
    )


async def _three(net: Net) -> dict[int, Partition]:
    parts = {i: _partition(net.start(i)) for i in (1, 2, 3)}
    await until(
        lambda: parts[1].is_leader and parts[1].state().isr == (1, 2, 3),
        "node 1 to lead with all three in sync",
    )
    return parts


def _entries(part: Partition) -> list[bytes]:
    """The record-batch entries of a replica's log, in order."""
    node = part.group.node
    first = part.group.storage.first_index()
    ents = part.group.storage.entries(first, node.last_index() + 1)
    return [
        e.data for e in ents if e.type == EntryType.NORMAL and e.data and not is_command(e.data)
    ]


def _bases(data: bytes) -> list[int]:
    return [h.base_offset for h, _ in records.split_batches(data)]


def _values(data: bytes) -> list[bytes]:
    return [r.value or b"" for r in records.iter_records(data)]


async def test_batches_between_two_rounds_are_one_entry_with_their_own_offsets(
    tmp_path: Path,
) -> None:
    net = Net(tmp_path)
    try:
        parts = await _three(net)
        leader = parts[1]
        entries_before = len(_entries(leader))
        futs = []
        for i, values in enumerate(((b"a", b"b"), (b"c",), (b"d", b"e", b"f"))):
            base, fut = leader.produce(_batch(*values), ACKS_ALL)
            assert base == (0, 2, 3)[i] and fut is not None
            futs.append(fut)
        assert await asyncio.wait_for(asyncio.gather(*futs), 20) == [0, 2, 3]
        await until(
            lambda: all(p.high_watermark == 6 for p in parts.values()), "six records everywhere"
        )
        for p in parts.values():
            new = _entries(p)[entries_before:]
            assert len(new) == 1, "three batches, one entry, on every replica"
            assert _bases(new[0]) == [0, 2, 3]
            assert len(p.offsets) == 1 and p.offsets.at(0).record_count == 6
        # Fetch serves the batches as they were written, from the one holding the offset.
        assert _values(leader.read(0, 1 << 20).records) == [b"a", b"b", b"c", b"d", b"e", b"f"]
        assert _bases(leader.read(2, 1 << 20).records) == [2, 3]
        assert _bases(leader.read(4, 1 << 20).records) == [3]
        assert _bases(leader.read(1, 1 << 20).records) == [0, 2, 3]
        # The next batch follows them, in an entry of its own.
        base, fut = leader.produce(_batch(b"g"), ACKS_LEADER)
        assert base == 6 and fut is not None and await asyncio.wait_for(fut, 20) == 6
    finally:
        await net.close()


async def test_each_batch_keeps_its_producer_sequence_checks(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        parts = await _three(net)
        leader = parts[1]
        _, f0 = leader.produce(_batch(b"p0", pid=7, seq=0), ACKS_ALL)
        _, f1 = leader.produce(_batch(b"p1", pid=7, seq=1), ACKS_ALL)
        # A gap (sequence 5, 2 expected) is refused, and only that batch.
        with pytest.raises(BrokerError) as gap:
            leader.produce(_batch(b"x", pid=7, seq=5), ACKS_ALL)
        assert gap.value.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        # A corrupt batch among them is refused alone too.
        bad = bytearray(_batch(b"q", pid=8, seq=0))
        bad[-1] ^= 0xFF
        with pytest.raises(BrokerError) as corrupt:
            leader.produce(bytes(bad), ACKS_ALL)
        assert corrupt.value.code == ErrorCode.CORRUPT_MESSAGE
        _, f2 = leader.produce(_batch(b"p2", pid=7, seq=2), ACKS_ALL)
        # A retry of a batch still waiting to be proposed is the same batch, not a new one.
        base, retry = leader.produce(_batch(b"p1", pid=7, seq=1), ACKS_ALL)
        assert base == 1 and retry is not None
        results = await asyncio.wait_for(asyncio.gather(f0, f1, f2, retry), 20)
        assert results == [0, 1, 2, 1]
        await until(lambda: all(p.high_watermark == 3 for p in parts.values()), "p0-p2 applied")
        assert _values(leader.read(0, 1 << 20).records) == [b"p0", b"p1", b"p2"]
        # Every replica recorded each batch of the producer, as the leader did.
        for p in parts.values():
            entry = p.producers.producers[7]
            assert [(b.first_seq, b.base_offset) for b in entry.batches] == [(0, 0), (1, 1), (2, 2)]
        # Once committed, a retry of any of them is answered with its own offset.
        for seq in (0, 1, 2):
            base, fut = leader.produce(_batch(b"p", pid=7, seq=seq), ACKS_ALL)
            assert base == seq and fut is not None and await fut == seq
    finally:
        await net.close()


async def test_acks_mixed_in_one_entry_answer_each_as_asked(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        parts = await _three(net)
        leader = parts[1]
        b0, none = leader.produce(_batch(b"n"), ACKS_NONE)
        b1, one = leader.produce(_batch(b"o"), ACKS_LEADER)
        b2, every = leader.produce(_batch(b"e"), ACKS_ALL)
        assert (b0, b1, b2) == (0, 1, 2) and none is None and one is not None
        assert every is not None
        assert await asyncio.wait_for(asyncio.gather(one, every), 20) == [1, 2]
    finally:
        await net.close()


async def test_batches_not_yet_proposed_when_leadership_moves_are_not_written(
    tmp_path: Path,
) -> None:
    net = Net(tmp_path)
    try:
        parts = await _three(net)
        leader = parts[1]
        _, first = leader.produce(_batch(b"kept"), ACKS_ALL)
        assert first is not None and await asyncio.wait_for(first, 20) == 0
        _, lost = leader.produce(_batch(b"lost"), ACKS_ALL)
        assert lost is not None
        # A leadership transfer begins before the driver proposes them: no proposal is taken.
        leader.group.node.transfer_leader(2)
        leader.flush_proposals()
        with pytest.raises(BrokerError) as e:
            await asyncio.wait_for(lost, 5)
        assert e.value.code == ErrorCode.NOT_LEADER
        await until(lambda: parts[2].is_leader, "node 2 to lead")
        # Offsets stay dense: the next batch takes offset 1, where the lost one would have been.
        base, fut = parts[2].produce(_batch(b"next"), ACKS_ALL)
        assert base == 1 and fut is not None and await asyncio.wait_for(fut, 20) == 1
        await until(lambda: all(p.high_watermark == 2 for p in parts.values()), "two records")
        assert _values(parts[2].read(0, 1 << 20).records) == [b"kept", b"next"]
    finally:
        await net.close()


async def test_without_coalescing_each_batch_is_its_own_entry(tmp_path: Path) -> None:
    net = Net(tmp_path, RaftTiming(tick_s=0.01, coalesce_proposals=False))
    try:
        parts = await _three(net)
        leader = parts[1]
        before = len(_entries(leader))
        futs = [leader.produce(_batch(v), ACKS_ALL)[1] for v in (b"a", b"b", b"c")]
        assert await asyncio.wait_for(asyncio.gather(*futs), 20) == [0, 1, 2]
        assert [_bases(d) for d in _entries(leader)[before:]] == [[0], [1], [2]]
    finally:
        await net.close()


class _NoOutbox:
    def send(self, to: int, group: str, msg: object) -> None:
        pass

    def flush(self) -> None:
        pass


async def test_gathers_that_catch_nothing_wait_fewer_turns_and_probe_in_full_again(
    tmp_path: Path,
) -> None:
    """The wait for more proposals is counted in loop turns, not time: with no proposal
    arriving, each gather halves the next one's quiet turns down to one, every
    coalesce_quiet_turns-th runs in full again, and one that catches a proposal restores
    the full wait (performance only: what is proposed and when it commits is unchanged)."""
    from node.driver import RaftDriver
    from node.storage import NodeStore

    store = NodeStore(tmp_path / "raft.db")
    try:
        driver = RaftDriver(1, store, _NoOutbox(), RaftTiming(coalesce_quiet_turns=8))

        async def turns_of_one_gather(arrive_after: int | None = None) -> int:
            before = driver.stats.gather_turns
            if arrive_after is not None:
                loop = asyncio.get_running_loop()

                def arrive(n: int = arrive_after) -> None:
                    if n:
                        loop.call_soon(arrive, n - 1)
                    else:
                        driver.will_propose("g", lambda: None, busy=True)

                loop.call_soon(arrive)
            await driver._gather_proposals()
            return driver.stats.gather_turns - before

        assert [await turns_of_one_gather() for _ in range(9)] == [8, 4, 2, 1, 1, 1, 1, 8, 4]
        # A proposal during the wait (its 2nd turn; the quiet turns are down to 2): the wait
        # goes on for 2 quiet turns from there, and the next gather waits in full again.
        assert await turns_of_one_gather(arrive_after=1) == 4
        assert await turns_of_one_gather() == 8
        assert driver.stats.gathers == 11
        assert driver.stats.gathers_caught == 1
    finally:
        store.close()
