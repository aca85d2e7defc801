"""client/partitioner.py: keys land where Kafka's Java client puts them.

The murmur2 values are those Kafka pins in its own UtilsTest.testMurmur2; the partition numbers
for 1000 partitions are the ones kafka-python checks against Java's DefaultPartitioner.
"""

from __future__ import annotations

import itertools
import random

import pytest

from client.partitioner import DefaultPartitioner, murmur2, partition_for_key

KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

JAVA_PARTITION_OF_1000 = {
    b"": 681,
    b"a": 524,
    b"ab": 434,
    b"abc": 107,
    b"123456789": 566,
    b"\x00 ": 742,
}


@pytest.mark.parametrize(("key", "expected"), KAFKA_MURMUR2.items())
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), JAVA_PARTITION_OF_1000.items())
def test_keyed_partition_matches_java(key: bytes, expected: int) -> None:
    assert partition_for_key(key, 1000) == expected
    assert DefaultPartitioner()("t", key, list(range(1000)), list(range(1000))) == expected


def test_high_bytes_do_not_break_the_32_bit_arithmetic() -> None:
    for data in (b"\xa4", b"\x81" * 1000, bytes(range(256))):
        assert -(2**31) <= murmur2(data) < 2**31


def test_a_key_stays_on_its_partition_even_without_a_leader() -> None:
    p = DefaultPartitioner()
    partitions = [0, 1, 2, 3, 4, 5]
    home = p("t", b"customer-7", partitions, partitions)
    for _ in range(10):
        assert p("t", b"customer-7", partitions, [home]) == home
        # Its leader is missing for a moment: the key must not move elsewhere.
        others = [q for q in partitions if q != home]
        assert p("t", b"customer-7", partitions, others) == home


def test_keyless_records_stick_to_a_partition_for_batch_size_bytes_then_move_on() -> None:
    """Kafka's uniform sticky partitioner (KIP-794): one partition until batch_size bytes have
    gone there, then the next one that has a leader; per topic."""
    p = DefaultPartitioner(batch_size=1000, rng=random.Random(7))
    parts = [0, 1, 2]
    seen = []
    for _ in range(30):
        chosen = p("a", None, parts, parts)
        p.appended("a", chosen, 100)
        seen.append(chosen)
    runs = [len(list(g)) for _, g in itertools.groupby(seen)]
    assert runs == [10, 10, 10], seen
    assert sorted(set(seen)) == parts  # each in turn
    assert seen[10] == (seen[0] + 1) % 3
    # A partition whose leader is missing is skipped; the order of the rest is kept.
    q = DefaultPartitioner(batch_size=100, rng=random.Random(1))
    got = []
    for _ in range(4):
        got.append(q("b", None, parts, [0, 2]))
        q.appended("b", got[-1], 100)
    assert got in ([0, 2, 0, 2], [2, 0, 2, 0])
    # Records the producer did not place keylessly (appended for another partition) do not
    # count towards the sticky partition's bytes.
    r = DefaultPartitioner(batch_size=100, rng=random.Random(3))
    home = r("c", None, parts, parts)
    r.appended("c", (home + 1) % 3, 500)
    assert r("c", None, parts, parts) == home


def test_a_sticky_partition_that_loses_its_leader_is_left_at_once() -> None:
    p = DefaultPartitioner(batch_size=10**6, rng=random.Random(5))
    parts = [0, 1, 2, 3]
    home = p("t", None, parts, parts)
    assert p("t", None, parts, parts) == home  # far from batch_size: stays
    others = [x for x in parts if x != home]
    moved = p("t", None, parts, others)
    assert moved in others
    assert p("t", None, parts, parts) == moved  # and stays there once its leader is back
    # Nothing available: it still chooses among all partitions (the send waits for a leader).
    assert p("u", None, parts, []) in parts


def test_the_next_sticky_partition_favours_those_with_fewer_batches_waiting() -> None:
    """KIP-794's adaptive choice: a partition whose batches pile up (a slow or silent leader)
    gets fewer new records; with every queue alike, the partitions come in turn."""
    waiting = {0: 6, 1: 0, 2: 1}
    p = DefaultPartitioner(
        batch_size=100, rng=random.Random(11), queued=lambda topic, part: waiting[part]
    )
    parts = [0, 1, 2]
    chosen = []
    for _ in range(600):
        c = p("t", None, parts, parts)
        p.appended("t", c, 100)
        chosen.append(c)
    counts = {x: chosen.count(x) for x in parts}
    # Weights 1, 7, 6 (most waiting 6, plus one, minus each partition's own).
    assert counts[0] < 0.15 * 600, counts
    assert counts[1] > counts[2] > counts[0], counts
    waiting.update({0: 2, 1: 2, 2: 2})
    q = DefaultPartitioner(batch_size=100, rng=random.Random(2), queued=lambda t, x: waiting[x])
    turn = []
    for _ in range(6):
        turn.append(q("u", None, parts, parts))
        q.appended("u", turn[-1], 100)
    assert all(b == (a + 1) % 3 for a, b in itertools.pairwise(turn)), turn


def test_producers_start_on_different_partitions() -> None:
    """The first keyless partition of a topic is drawn at random, so that many producers
    started together do not all fill the same partition first."""
    starts = {
        DefaultPartitioner(rng=random.Random(seed))("t", None, [0, 1, 2, 3], [0, 1, 2, 3])
        for seed in range(40)
    }
    assert starts == {0, 1, 2, 3}


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DefaultPartitioner(batch_size=0)


def test_no_partitions_is_an_error() -> None:
    with pytest.raises(ValueError, match="no partitions"):
        DefaultPartitioner()("t", b"k", [], [])
