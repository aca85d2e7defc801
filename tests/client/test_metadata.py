"""client/metadata.py: the cluster cache takes Metadata answers and leader hints, no I/O.

The rules under test (see the module docstring): a newer leader epoch wins; a lagging node's
older view does not undo what we know; a hint is followed unless it is older than our view; a
hint without an epoch survives an update at the same epoch; topics vanish when deleted.
"""

from __future__ import annotations

import pytest

from client.metadata import ClusterMetadata, PartitionMetadata, best_view, parse_address
from liferaft_proto.v1 import broker_pb2
from liferaft_proto.v1.errors_pb2 import ErrorCode


def response(
    *partitions: tuple[int, int, list[int]],
    topic: str = "orders",
    controller: int = 1,
    brokers: tuple[int, ...] = (1, 2, 3),
    extra_topics: tuple[broker_pb2.TopicMetadata, ...] = (),
) -> broker_pb2.MetadataResponse:
    """A Metadata answer: partitions given as (leader, epoch, isr), replicas 1,2,3."""
    resp = broker_pb2.MetadataResponse(controller_id=controller, cluster_id="c1")
    for n in brokers:
        resp.brokers.append(broker_pb2.BrokerInfo(node_id=n, host="127.0.0.1", port=9090 + n))
    tm = broker_pb2.TopicMetadata(name=topic)
    for i, (leader, epoch, isr) in enumerate(partitions):
        pm = broker_pb2.PartitionMetadata(
            partition=i,
            leader_id=leader,
            leader_epoch=epoch,
            replicas=[1, 2, 3],
            isr=isr,
            high_watermark=10 * i,
            log_start_offset=i,
        )
        if leader == 0:
            pm.error_code = ErrorCode.LEADER_NOT_AVAILABLE
        tm.partitions.append(pm)
    resp.topics.append(tm)
    resp.topics.extend(extra_topics)
    return resp


def test_update_answers_who_leads() -> None:
    md = ClusterMetadata()
    assert md.stale
    md.update(response((1, 3, [1, 2, 3]), (2, 5, [2, 3]), (0, 0, [])))
    assert not md.stale
    assert md.cluster_id == "c1"
    assert md.controller_id == 1
    assert md.controller_address() == "127.0.0.1:9091"
    assert md.partitions_for("orders") == (0, 1, 2)
    assert md.leader_for("orders", 0) == 1
    assert md.leader_address("orders", 1) == "127.0.0.1:9092"
    assert md.leader_for("orders", 2) is None  # no leader: none to route to
    assert md.leader_address("orders", 2) is None
    assert md.leader_for("orders", 3) is None  # no such partition
    assert md.partitions_for("nope") is None
    assert md.available_partitions_for("orders") == (0, 1)
    p1 = md.partition("orders", 1)
    assert p1 is not None
    assert (p1.isr, p1.replicas, p1.high_watermark, p1.log_start_offset) == (
        (2, 3),
        (1, 2, 3),
        10,
        1,
    )
    assert md.leaders_by_node() == {1: [("orders", 0)], 2: [("orders", 1)], 3: []}


def test_a_newer_epoch_replaces_an_older_view_does_not() -> None:
    md = ClusterMetadata()
    md.update(response((1, 3, [1, 2, 3])))
    md.update(response((2, 4, [2, 3])))
    assert md.leader_for("orders", 0) == 2
    # A lagging node still thinks node 1 leads at epoch 3: ignored.
    md.update(response((1, 3, [1, 2, 3])))
    assert md.leader_for("orders", 0) == 2
    pm = md.partition("orders", 0)
    assert pm is not None and pm.leader_epoch == 4
    # A node that knows no leader at all (epoch 0) does not erase ours either.
    md.update(response((0, 0, [])))
    assert md.leader_for("orders", 0) == 2


def test_hint_with_epoch_applies_only_if_not_older() -> None:
    md = ClusterMetadata()
    md.update(response((1, 5, [1, 2, 3])))
    assert not md.apply_leader_hint("orders", 0, 2, "127.0.0.1:9092", leader_epoch=4)
    assert md.leader_for("orders", 0) == 1
    assert md.apply_leader_hint("orders", 0, 2, "127.0.0.1:9092", leader_epoch=6)
    assert md.leader_for("orders", 0) == 2
    pm = md.partition("orders", 0)
    assert pm is not None and pm.leader_epoch == 6 and not pm.hinted
    # The same hint again changes nothing: no reason to skip the backoff.
    assert not md.apply_leader_hint("orders", 0, 2, "", leader_epoch=6)


def test_hint_without_epoch_is_followed_and_survives_a_same_epoch_update() -> None:
    md = ClusterMetadata()
    md.update(response((1, 5, [1, 2, 3])))
    version = md.version
    assert md.apply_leader_hint("orders", 0, 3, "")  # node 1 said: node 3 leads
    assert md.version > version
    assert md.leader_for("orders", 0) == 3
    # The node we refreshed from still says node 1 at epoch 5: that view already failed us.
    md.update(response((1, 5, [1, 2, 3])))
    assert md.leader_for("orders", 0) == 3
    # A real election (epoch 6) wins over the hint.
    md.update(response((2, 6, [1, 2, 3])))
    assert md.leader_for("orders", 0) == 2
    pm = md.partition("orders", 0)
    assert pm is not None and not pm.hinted


def test_hint_to_an_unknown_node_needs_an_address() -> None:
    md = ClusterMetadata()
    md.update(response((1, 1, [1])))
    assert not md.apply_leader_hint("orders", 0, 7, "")  # cannot route to it
    assert not md.apply_leader_hint("orders", 0, 7, "not an address")
    assert md.apply_leader_hint("orders", 0, 7, "10.0.0.7:9092")
    assert md.leader_address("orders", 0) == "10.0.0.7:9092"
    assert not md.apply_leader_hint("orders", 0, 0, "")  # "no leader known" is no hint
    assert not md.apply_leader_hint("nope", 0, 2, "")
    assert not md.apply_leader_hint("orders", 9, 2, "")


def test_invalidate_marks_stale_until_a_full_update() -> None:
    md = ClusterMetadata()
    md.update(response((1, 1, [1])))
    md.invalidate()
    assert md.stale
    assert md.leader_for("orders", 0) == 1  # still usable meanwhile
    md.update(response((1, 1, [1])), all_topics=False)
    assert md.stale  # a partial answer does not vouch for every topic
    md.update(response((1, 1, [1])))
    assert not md.stale


def test_deleted_and_unknown_topics_are_dropped() -> None:
    md = ClusterMetadata()
    other = broker_pb2.TopicMetadata(
        name="audit",
        partitions=[broker_pb2.PartitionMetadata(partition=0, leader_id=2, leader_epoch=1)],
    )
    md.update(response((1, 1, [1]), extra_topics=(other,)))
    assert md.partitions_for("audit") == (0,)
    md.update(response((1, 1, [1])))  # a full answer without "audit": it was deleted
    assert md.partitions_for("audit") is None
    unknown = broker_pb2.TopicMetadata(
        name="orders", error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    )
    md.update(broker_pb2.MetadataResponse(topics=[unknown]), all_topics=False)
    assert md.partitions_for("orders") is None


def test_recreated_topic_with_other_partition_count_is_taken_whole() -> None:
    md = ClusterMetadata()
    md.update(response((1, 9, [1]), (2, 9, [2])))
    md.update(response((3, 1, [3])))
    assert md.partitions_for("orders") == (0,)
    assert md.leader_for("orders", 0) == 3


def test_controller_hint() -> None:
    md = ClusterMetadata()
    md.update(response((1, 1, [1]), controller=1))
    assert md.apply_controller_hint(2)
    assert md.controller_address() == "127.0.0.1:9092"
    assert not md.apply_controller_hint(2)
    assert not md.apply_controller_hint(0)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9092") == ("127.0.0.1", 9092)
    assert parse_address("[::1]:9092") == ("::1", 9092)


@pytest.mark.parametrize("bad", ["nohost", ":9092", "h:x", "h:0", "h:70000"])
def test_parse_address_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_address(bad)


def view(leader: int, epoch: int, isr: tuple[int, ...] = ()) -> PartitionMetadata:
    return PartitionMetadata(
        topic="t",
        partition=0,
        leader=leader,
        leader_epoch=epoch,
        replicas=(1, 2, 3),
        isr=isr,
        high_watermark=0,
        log_start_offset=0,
    )


def test_best_view_prefers_the_newest_epoch_then_the_leaders_own() -> None:
    lagging = view(0, 0)
    gossip = view(2, 4)
    own = view(2, 4, isr=(1, 2, 3))
    assert best_view([(1, lagging), (3, gossip), (2, own)]) is own
    assert best_view([(1, lagging), (3, gossip)]) is gossip
    assert best_view([(1, view(3, 2)), (3, view(2, 1))]) == view(3, 2)
    assert best_view([(1, lagging)]) is lagging
    assert best_view([]) is None
    # A deposed leader that has not heard of the election yet loses to the new one.
    assert best_view([(1, view(1, 3, isr=(1,))), (2, view(2, 4))]) == view(2, 4)


def test_available_partitions_follow_every_change_though_they_are_worked_out_once() -> None:
    """available_partitions_for is remembered per topic (the producer asks for every keyless
    record); a new leader, a broker joining or leaving must still show at once."""
    md = ClusterMetadata()
    md.update(response((1, 3, [1, 2, 3]), (4, 5, [2, 3]), (0, 0, [])))
    assert md.available_partitions_for("orders") == (0,)  # 4 is not a known broker
    assert md.available_partitions_for("orders") is md.available_partitions_for("orders")
    # A hint names node 4 with its address: it joins the brokers in place.
    md.apply_leader_hint("orders", 2, 4, "127.0.0.1:9094", 6)
    assert md.available_partitions_for("orders") == (0, 1, 2)
    # A Metadata answer without node 1: its partition is no longer available.
    md.update(response((1, 4, [1, 2, 3]), (4, 5, [2, 3]), (4, 6, [2]), brokers=(2, 3, 4)))
    assert md.available_partitions_for("orders") == (1, 2)
    # A broker removed in place (not through update) counts too.
    del md.brokers[4]
    assert md.available_partitions_for("orders") == ()
    assert md.available_partitions_for("nope") == ()
