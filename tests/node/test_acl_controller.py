"""ACLs in the controller's replicated state: created and deleted by commands every node applies,
kept across a controller leader change and in snapshots across a restart; bad input refused
with a clear error, changing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.acl import (
    AclBinding,
    AclBindingFilter,
    AclSet,
    Operation,
    PatternType,
    Permission,
    ResourcePattern,
    ResourceType,
)
from node.controller import Controller
from node.controller_commands import CONTROLLER_COMMANDS, CreateAcls, DeleteAcls
from node.errors import BrokerError, ErrorCode
from raft import Message, Role
from tests.node.inproc import Net, until


def _acl(name: str, op: Operation = Operation.READ, who: str = "User:alice") -> AclBinding:
    return AclBinding(
        pattern=ResourcePattern(type=ResourceType.TOPIC, name=name),
        principal=who,
        operation=op,
        permission=Permission.ALLOW,
    )


@pytest.mark.asyncio
async def test_acls_replicate_and_survive_a_leader_change(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        ctls = {i: Controller(i, [1, 2, 3], net.start(i).driver) for i in (1, 2, 3)}
        await until(lambda: any(c.is_leader for c in ctls.values()), "a controller leader")
        old = next(i for i, c in ctls.items() if c.is_leader)
        leader = ctls[old]
        acls = [_acl("orders"), _acl("pay.", Operation.WRITE), _acl("orders")]
        assert await leader.replicate_and_wait(leader.plan_create_acls(acls)) == 2
        assert list(leader.state.acls) == acls[:2]
        await until(
            lambda: all(list(c.state.acls) == acls[:2] for c in ctls.values()), "ACLs applied"
        )

        def cut(frm: int, to: int, _g: str, _m: Message) -> bool:
            return old in (frm, to)

        net.drop = cut
        others = [i for i in ctls if i != old]
        await until(lambda: any(ctls[i].is_leader for i in others), "a new leader")
        new = next(i for i in others if ctls[i].is_leader)
        ctl = ctls[new]
        assert list(ctl.state.acls) == acls[:2]
        gone = await ctl.replicate_and_wait(
            ctl.plan_delete_acls([AclBindingFilter(name="orders"), AclBindingFilter()])
        )
        assert gone == [[acls[0].to_json()], [acls[1].to_json()]]
        assert len(ctl.state.acls) == 0
    finally:
        await net.close()


@pytest.mark.asyncio
async def test_acls_are_in_the_snapshot_and_back_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Controller, "snapshot_every", 10)
    net = Net(tmp_path)

    async def open_one() -> Controller:
        ctl = Controller(1, [1], net.start(1).driver)

        def caught_up() -> bool:
            st = ctl.raft_group.node.status()
            return st.role == Role.LEADER and st.applied == st.last_index == st.commit

        await until(caught_up, "one node to lead and apply its log")
        return ctl

    try:
        ctl = await open_one()
        for i in range(25):
            await ctl.replicate_and_wait(ctl.plan_create_acls([_acl(f"t{i}")]))
        await ctl.replicate_and_wait(ctl.plan_delete_acls([AclBindingFilter(name="t3")]))
        assert ctl.raft_group.storage.snapshot().meta.index > 0
        before = list(ctl.state.acls)
        assert len(before) == 24
        await net.stop(1)
        ctl = await open_one()
        assert list(ctl.state.acls) == before
    finally:
        await net.close()


@pytest.mark.asyncio
async def test_too_many_acls_are_refused_and_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.controller.MAX_ACLS", 3)
    net = Net(tmp_path)
    try:
        ctl = Controller(1, [1], net.start(1).driver)
        await until(lambda: ctl.is_leader, "a leader")
        await ctl.replicate_and_wait(ctl.plan_create_acls([_acl("a"), _acl("b")]))
        with pytest.raises(BrokerError) as e:
            ctl.plan_create_acls([_acl("c"), _acl("d")])
        assert e.value.code == ErrorCode.INVALID_REQUEST
        assert "the cluster has 2 ACLs; 2 more would pass its bound of 3" in e.value.message
        # The same check when applied (two racing creates both planned under the bound).
        with pytest.raises(BrokerError):
            await ctl.replicate_and_wait(
                CreateAcls(acls=(_acl("c").to_json(), _acl("d").to_json()))
            )
        assert [a.pattern.name for a in ctl.state.acls] == ["a", "b"]
        with pytest.raises(BrokerError, match="between 1 and"):
            ctl.plan_create_acls([])
    finally:
        await net.close()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"op": "create_acls", "acls": []}',
        b'{"op": "create_acls", "acls": [{"resource_type": "topic"}]}',
        b'{"op": "create_acls", "acls": [{"resource_type": "topic", "name": "t", '
        b'"principal": "User:a", "operation": "read", "permission": "maybe"}]}',
        b'{"op": "delete_acls", "filters": [{"operation": "fly"}]}',
        b'{"op": "delete_acls", "filters": "all"}',
    ],
)
def test_malformed_acl_commands_are_refused(raw: bytes) -> None:
    with pytest.raises(BrokerError) as e:
        CONTROLLER_COMMANDS.decode(raw)
    assert e.value.code == ErrorCode.INVALID_REQUEST


def test_acl_commands_round_trip() -> None:
    create = CreateAcls(acls=(_acl("x").to_json(),))
    delete = DeleteAcls(
        filters=(AclBindingFilter(pattern_type=PatternType.MATCH, name="x").to_json(),)
    )
    assert CONTROLLER_COMMANDS.decode(create.encode()) == create
    assert CONTROLLER_COMMANDS.decode(delete.encode()) == delete
    assert create.bindings == (_acl("x"),)
    assert AclSet(create.bindings) == AclSet([_acl("x")])
