"""The replica comparison's decisions (chaos/replicas.py), on answers built by hand: equal
replicas pass, a digest that differs is a difference, a replica still catching up is waited for,
and the compared range is the one every replica holds."""

from __future__ import annotations

from chaos.replicas import _ranges, current_views, diff_views, missing_replicas
from liferaft_proto.v1 import broker_pb2


def view(
    node: int,
    hw: int = 10,
    digest: str = "aa",
    start: int = 0,
    covered: tuple[int, int] | None = None,
    controller: tuple[int, str] = (5, "c1"),
    groups: tuple[int, str] = (7, "g1"),
) -> broker_pb2.ReplicaStateResponse:
    lo, hi = covered if covered is not None else (start, hw)
    return broker_pb2.ReplicaStateResponse(
        node_id=node,
        partitions=[
            broker_pb2.PartitionReplicaState(
                topic="t",
                partition=0,
                log_start_offset=start,
                high_watermark=hw,
                digest_from=lo,
                digest_to=hi,
                digest=digest,
            )
        ],
        controller=broker_pb2.StateMachineReplicaState(
            applied_index=controller[0], digest=controller[1]
        ),
        groups=broker_pb2.StateMachineReplicaState(applied_index=groups[0], digest=groups[1]),
    )


def test_identical_replicas_have_no_difference() -> None:
    views = {f"n{i}": view(i) for i in (1, 2, 3)}
    assert diff_views(views, _ranges(views)) == ([], [])


def test_a_log_that_differs_under_the_high_watermark_is_a_difference() -> None:
    views = {"n1": view(1), "n2": view(2), "n3": view(3, digest="bb")}
    differences, waiting = diff_views(views, _ranges(views))
    assert waiting == []
    assert differences == [
        "t/0: the logs differ over offsets [0, 10): "
        "{'node 1': 'aa', 'node 2': 'aa', 'node 3': 'bb'}"
    ]


def test_states_that_differ_at_one_applied_index_are_differences() -> None:
    views = {"n1": view(1), "n2": view(2, controller=(5, "c2"), groups=(7, "g2"))}
    differences, _ = diff_views(views, _ranges(views))
    assert [d.split(":")[0] for d in differences] == ["controller", "groups"]


def test_a_replica_behind_is_waited_for_not_counted() -> None:
    views = {"n1": view(1), "n2": view(2, hw=8, digest="bb"), "n3": view(3, groups=(6, "g0"))}
    differences, waiting = diff_views(views, _ranges(views))
    assert differences == []
    assert [w.split(":")[0] for w in waiting] == ["t/0", "groups"]


def test_the_range_compared_starts_at_the_largest_log_start() -> None:
    # Node 3 caught up from a snapshot: its log starts at 4. Compared over [4, 10) only.
    views = {"n1": view(1), "n2": view(2), "n3": view(3, start=4)}
    assert _ranges(views) == {"t/0": (4, 10)}
    _, waiting = diff_views(views, _ranges(views))  # answers over [0, 10): asked again
    assert waiting and "different ranges" in waiting[0]
    views = {f"n{i}": view(i, start=4 if i == 3 else 0, covered=(4, 10)) for i in (1, 2, 3)}
    assert diff_views(views, _ranges(views)) == ([], [])


def test_only_the_current_replicas_of_a_partition_are_compared() -> None:
    # A move took t/0 from {1, 2, 3} to {1, 2, 4}: node 3's copy, still closing, stopped at an
    # older high watermark; node 4 holds the whole log. The replicas compared are 1, 2, 4.
    views = {"n1": view(1), "n2": view(2), "n3": view(3, hw=6, digest="old"), "n4": view(4)}
    _, waiting = diff_views(views, _ranges(views))
    assert waiting, "every copy compared: node 3's is taken for one behind"
    now = current_views(views, {"t/0": {1, 2, 4}})
    assert [len(v.partitions) for v in now.values()] == [1, 1, 0, 1]
    assert now["n3"].controller.digest == "c1"  # the controller and groups still compared
    assert diff_views(now, _ranges(now)) == ([], [])
    assert missing_replicas(now, {"t/0": {1, 2, 4}}) == []
    assert current_views(views, None) is views


def test_a_current_replica_without_a_copy_is_not_converged() -> None:
    views = {"n1": view(1), "n2": view(2), "n3": view(3)}
    views["n3"].ClearField("partitions")
    assert missing_replicas(views, {"t/0": {1, 2, 3}}) == [
        "t/0: node 3 is a replica and holds no copy"
    ]
    assert missing_replicas(views, {"t/0": {1, 2}}) == []
