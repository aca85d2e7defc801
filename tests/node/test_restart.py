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

from node.controller import Controller
from node.groups import GroupCoordinator
from raft import Role
from tests.node.inproc import Net, until

pytestmark = pytest.mark.asyncio


def _caught_up(ctl: Controller, coord: GroupCoordinator) -> bool:
    for group in (ctl.group, coord.group):
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
        await ctl.propose({"op": "register_broker", "node_id": 1, "host": "127.0.0.1", "port": 1})
        for name in ("a", "b"):
            await ctl.propose(ctl.plan_create_topic(name, 1, 1, {}))
        for _ in range(28):
            await ctl.propose({"op": "allocate_producer_ids", "count": 1})
        for i in range(45):
            await coord.propose(
                {
                    "op": "join",
                    "group": "g",
                    "member": f"m{i}",
                    "session_timeout_ms": 10_000,
                    "client_id": "c",
                    "topics": ["a"],
                }
            )
        # Several snapshots were taken, each with entries kept below it.
        for group in (ctl.group, coord.group):
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
        assert await ctl.propose({"op": "allocate_producer_ids", "count": 1}) == 29
    finally:
        await net.close()
