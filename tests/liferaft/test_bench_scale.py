"""`liferaft bench partitions`' arithmetic: whose ISR counts, what is complete, CPU from /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liferaft.bench.scale import (
    ScaleSpec,
    authoritative_view,
    cpu_seconds,
    incomplete,
    leader_counts,
)
from liferaft_proto.v1 import broker_pb2, errors_pb2

TOPIC = "t"


def _answer(*parts: tuple[int, int, int, list[int], list[int]]) -> broker_pb2.MetadataResponse:
    """A Metadata answer: (partition, leader, epoch, replicas, isr) per partition."""
    tm = broker_pb2.TopicMetadata(name=TOPIC)
    for p, leader, epoch, replicas, isr in parts:
        tm.partitions.append(
            broker_pb2.PartitionMetadata(
                partition=p, leader_id=leader, leader_epoch=epoch, replicas=replicas, isr=isr
            )
        )
    return broker_pb2.MetadataResponse(topics=[tm])


def test_only_a_partitions_own_leader_is_believed() -> None:
    full = [1, 2, 3]
    answers = {
        # Node 1 leads p0 with a full ISR; its gossip about p1 (led by 2) is stale and full.
        1: _answer((0, 1, 5, full, full), (1, 2, 3, full, full)),
        # Node 2 leads p1 and says node 3 has dropped out.
        2: _answer((0, 1, 5, full, full), (1, 2, 3, full, [1, 2])),
        3: None,  # down
    }
    view = authoritative_view(answers, TOPIC)
    assert view[0].complete and not view[1].complete
    assert incomplete(view, 3) == [1, 2]  # p2: nobody claims it
    assert leader_counts(view, [1, 2, 3]) == {1: 1, 2: 1, 3: 0}


def test_the_higher_epoch_wins_between_two_claimed_leaders() -> None:
    full = [1, 2, 3]
    answers = {
        1: _answer((0, 1, 4, full, [1])),  # an old leader that has not heard of the election
        2: _answer((0, 2, 6, full, full)),
    }
    view = authoritative_view(answers, TOPIC)
    assert view[0].leader == 2 and view[0].complete


def test_an_unknown_topic_contributes_nothing() -> None:
    md = broker_pb2.MetadataResponse(
        topics=[
            broker_pb2.TopicMetadata(name=TOPIC, error_code=errors_pb2.UNKNOWN_TOPIC_OR_PARTITION)
        ]
    )
    assert authoritative_view({1: md}, TOPIC) == {}


def test_cpu_seconds_reads_utime_and_stime(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    (tmp_path / "42").mkdir()
    # A command name with spaces and a parenthesis, as proc(5) allows; utime 300, stime 100.
    fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", "300", "100", "0", "0"]
    (tmp_path / "42" / "stat").write_text("42 (py (x) y) " + " ".join(fields) + "\n")
    assert cpu_seconds(42, proc=tmp_path) == pytest.approx(400 / tick)
    assert cpu_seconds(os.getpid()) >= 0


def test_spec_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="victim"):
        ScaleSpec(victim=4)
    with pytest.raises(ValueError, match="partitions"):
        ScaleSpec(partitions=0)
    with pytest.raises(ValueError, match="idle"):
        ScaleSpec(idle_s=0)
    with pytest.raises(ValueError, match="down-seconds"):
        ScaleSpec(down_s=-1)
