"""client/partitioner.py: keys land where Kafka's Java client puts them.

The murmur2 values are those Kafka pins in its own UtilsTest.testMurmur2; the partition numbers
for 1000 partitions are the ones kafka-python checks against Java's DefaultPartitioner.
"""

from __future__ import annotations

from collections import Counter

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


def test_keyless_records_go_round_robin_per_topic_over_available() -> None:
    p = DefaultPartitioner()
    assert [p("a", None, [0, 1, 2], [0, 1, 2]) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    assert [p("b", None, [0, 1, 2], [0, 2]) for _ in range(4)] == [0, 2, 0, 2]
    # Nothing available: spread over all partitions (the send waits for a leader).
    assert Counter(p("c", None, [0, 1, 2], []) for _ in range(9)) == {0: 3, 1: 3, 2: 3}


def test_no_partitions_is_an_error() -> None:
    with pytest.raises(ValueError, match="no partitions"):
        DefaultPartitioner()("t", b"k", [], [])
