"""A restarted node applies only what its snapshot does not hold (issue 10, finding 1).

The controller and `__groups` snapshot every `snapshot_every` entries and keep half that many
entries below the snapshot for followers slightly behind. Their commands are not idempotent
(a producer-id allocation, a topic creation, a join each bump a counter), so a restart that
re-applies the kept entries on top of the restored snapshot hands out producer ids twice and
changes topic ids and generations. Here one real node (driver, RocksDB store) with
`snapshot_every` scaled down writes past several snapshots, stops, starts again, and its state
must be exactly what it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.consumer_group_commands import JoinGroup
from node.controller import Controller
from node.controller_commands import AllocateProducerIds, RegisterBroker
from node.groups import GroupCoordinator
from raft import Role
from tests.node.inproc import Net, until

pytestmark = pytest.mark.asyncio


def _caught_up(ctl: Controller, coord: GroupCoordinator) -> bool:
    for group in (ctl.raft_group, coord.raft_group):
        st = group.node.status()
        if st.role != Role.LEADER or st.applied != st.last_index or st.commit != st.last_index:
            return False
    return True


async def _open(net: Net) -> tuple[Controller, GroupCoordinator]:
    node = net.start(1)
    ctl = Controller(1, [1], node.driver)
    coord = GroupCoordinator(1, [1], node.driver, lambda _topic: None)
    await until(lambda: _caught_up(ctl, coord), "one node to lead and apply its log")
    return ctl, coord


async def test_restart_does_not_apply_again_what_the_snapshot_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Controller, "snapshot_every", 20)
    monkeypatch.setattr(GroupCoordinator, "snapshot_every", 20)
    net = Net(tmp_path)
    try:
        ctl, coord = await _open(net)
        await ctl.replicate_and_wait(RegisterBroker(node_id=1, host="127.0.0.1", port=1))
        for name in ("a", "b"):
            await ctl.replicate_and_wait(ctl.plan_create_topic(name, 1, 1, {}))
        for _ in range(28):
            await ctl.replicate_and_wait(AllocateProducerIds(count=1))
        for i in range(45):
            await coord.replicate_and_wait(
                JoinGroup(
                    group_id="g",
                    member_id=f"m{i}",
                    session_timeout_ms=10_000,
                    client_id="c",
                    topics=("a",),
                )
            )
        # Several snapshots were taken, each with entries kept below it.
        for group in (ctl.raft_group, coord.raft_group):
            snap = group.storage.snapshot().meta.index
            assert snap > 0 and group.storage.first_index() - 1 < snap
        before_ctl = ctl.state.to_json()
        before_groups = coord.state.to_json()
        assert ctl.state.next_producer_id == 29 and ctl.state.next_topic_id == 3
        generation = coord.state.groups["g"].generation

        await net.stop(1)
        ctl, coord = await _open(net)

        assert ctl.state.next_producer_id == 29
        assert ctl.state.next_topic_id == 3
        assert coord.state.groups["g"].generation == generation
        assert ctl.state.to_json() == before_ctl
        assert coord.state.to_json() == before_groups
        # And the next id handed out is the next one, not one handed out before.
        assert await ctl.replicate_and_wait(AllocateProducerIds(count=1)) == 29
    finally:
        await net.close()


OLD_CONTROLLER_LOG = [
    # The controller's log as the code before commands were values wrote it: {"op": ...} JSON.
    b'{"op": "register_broker", "node_id": 1, "host": "127.0.0.1", "port": 9092}',
    b'{"op": "create_topic", "name": "a", "replicas": [[1]], "configs": {}}',
    b'{"op": "create_topic", "name": "b", "replicas": [[1]], "configs": {"retention.ms": "60000"}}',
    b'{"op": "allocate_producer_ids", "count": 1}',
    b'{"op": "create_partitions", "name": "a", "topic_id": 1, "from": 1, "replicas": [[1], [1]]}',
    b'{"op": "alter_topic_configs", "name": "a", "topic_id": 1, '
    b'"changes": {"retention.ms": "1000", "x": null}}',
    b'{"op": "delete_topic", "name": "b"}',
    b'{"op": "allocate_producer_ids", "count": 5}',
]
OLD_GROUPS_LOG = [
    b'{"op": "join", "group": "g", "member": "m1", "session_timeout_ms": 10000, '
    b'"client_id": "c", "topics": ["a"]}',
    b'{"op": "join", "group": "g", "member": "m2", "session_timeout_ms": 6000, '
    b'"client_id": "c", "topics": ["a"]}',
    b'{"op": "commit", "group": "g", "offsets": [["a", 0, 7, "meta"], ["a", 1, 3, ""]], '
    b'"ts": 1700000000000}',
    b'{"op": "leave", "group": "g", "members": ["m1"]}',
    b'{"op": "commit", "group": "gone", "offsets": [["a", 0, 1, ""]], "ts": 1}',
    b'{"op": "delete", "group": "gone"}',
]


async def test_a_log_written_as_op_dicts_replays(tmp_path: Path) -> None:
    """A data directory written before commands were values (node/command.py keeps their JSON
    shape) opens with the same state: applied as written, then again from the log on restart."""
    net = Net(tmp_path)
    try:
        ctl, coord = await _open(net)
        for fsm, entries in ((ctl, OLD_CONTROLLER_LOG), (coord, OLD_GROUPS_LOG)):
            for data in entries:
                fsm.raft_group.node.propose(data)
            fsm.driver.touched(fsm.group_id)
        await until(lambda: _caught_up(ctl, coord), "the old entries applied")
        for _ in range(2):
            st = ctl.state
            assert st.brokers[1].address == "127.0.0.1:9092"
            assert sorted(st.topics) == ["a"] and st.topics["a"].replicas == [[1], [1], [1]]
            assert st.topics["a"].configs == {"retention.ms": "1000"}
            assert st.next_topic_id == 3 and st.next_producer_id == 7
            g = coord.state.groups["g"]
            assert sorted(g.members) == ["m2"] and g.members["m2"].session_timeout_ms == 6000
            assert g.generation == 3
            assert {tp: (o.offset, o.metadata, o.timestamp_ms) for tp, o in g.offsets.items()} == {
                ("a", 0): (7, "meta", 1700000000000),
                ("a", 1): (3, "", 1700000000000),
            }
            assert "gone" not in coord.state.groups
            # No snapshot was taken: a restart replays every entry from the log.
            assert ctl.raft_group.storage.snapshot().meta.index == 0
            await net.stop(1)
            ctl, coord = await _open(net)
    finally:
        await net.close()
