"""Commands as values (node/command.py): built checked, one encode, one decode, the old shape.

The controller's and the coordinator's logs hold these as `{"op": ...}` JSON; a data directory
written before they were values must read the same (tests/node/test_restart.py replays one).
"""

from __future__ import annotations

import json

import pytest

from node.command import CommandSet
from node.consumer_group_commands import (
    CONSUMER_GROUP_COMMANDS,
    CommitOffsets,
    DeleteGroup,
    JoinGroup,
    LeaveGroup,
)
from node.controller_commands import (
    CONTROLLER_COMMANDS,
    AdmitIncarnation,
    AllocateProducerIds,
    AlterTopicConfigs,
    CancelMove,
    CreateAcls,
    CreatePartitions,
    CreateTopic,
    DecommissionNode,
    DeleteAcls,
    DeleteTopic,
    DeleteUser,
    MovePartition,
    PartitionMembership,
    RecommissionNode,
    RegisterBroker,
    UpsertUser,
)
from node.errors import BrokerError, ErrorCode

EXAMPLES = [
    (CONTROLLER_COMMANDS, RegisterBroker(node_id=2, host="h", port=9093)),
    (CONTROLLER_COMMANDS, AdmitIncarnation(node_id=3, incarnation=77, min_term=4, index=19)),
    (CONTROLLER_COMMANDS, CreateTopic(name="t", replicas=((1, 2), (2, 1)), configs={"a": "b"})),
    (CONTROLLER_COMMANDS, DeleteTopic(name="t")),
    (CONTROLLER_COMMANDS, AllocateProducerIds(count=3)),
    (CONTROLLER_COMMANDS, CreatePartitions(name="t", topic_id=4, from_count=2, replicas=((3,),))),
    (CONTROLLER_COMMANDS, AlterTopicConfigs(name="t", topic_id=4, changes={"a": None, "b": "1"})),
    (
        CONTROLLER_COMMANDS,
        UpsertUser(
            name="alice",
            mechanism="SCRAM-SHA-256",
            salt="c2FsdA==",
            iterations=4096,
            stored_key="a2V5",
            server_key="a2V5",
        ),
    ),
    (CONTROLLER_COMMANDS, DeleteUser(name="alice")),
    (
        CONTROLLER_COMMANDS,
        CreateAcls(
            acls=(
                {
                    "resource_type": "topic",
                    "name": "t",
                    "pattern_type": "prefixed",
                    "principal": "User:alice",
                    "host": "*",
                    "operation": "write",
                    "permission": "allow",
                },
            )
        ),
    ),
    (CONTROLLER_COMMANDS, DeleteAcls(filters=({"resource_type": "topic", "name": None},))),
    (
        CONTROLLER_COMMANDS,
        MovePartition(name="t", topic_id=4, partition=0, target=(1, 2, 4), throttle_bytes_s=9),
    ),
    (
        CONTROLLER_COMMANDS,
        PartitionMembership(
            name="t", topic_id=4, partition=0, voters=(1, 2), learners=(4,), conf_index=7
        ),
    ),
    (CONTROLLER_COMMANDS, DecommissionNode(node_id=3)),
    (CONTROLLER_COMMANDS, CancelMove(name="t", topic_id=4, partition=0)),
    (CONTROLLER_COMMANDS, RecommissionNode(node_id=3)),
    (
        CONSUMER_GROUP_COMMANDS,
        JoinGroup(group_id="g", member_id="m", session_timeout_ms=1, client_id="", topics=("t",)),
    ),
    (CONSUMER_GROUP_COMMANDS, LeaveGroup(group_id="g", member_ids=("m", "n"))),
    (
        CONSUMER_GROUP_COMMANDS,
        CommitOffsets(group_id="g", offsets=(("t", 0, 5, "x"),), timestamp_ms=9),
    ),
    (CONSUMER_GROUP_COMMANDS, DeleteGroup(group_id="g")),
]


@pytest.mark.parametrize(("commands", "command"), EXAMPLES, ids=lambda c: getattr(c, "op", ""))
def test_a_command_decodes_to_itself(commands: CommandSet, command: object) -> None:
    assert commands.decode(command.encode()) == command  # type: ignore[attr-defined]


def test_every_command_has_an_example() -> None:
    seen = {type(c) for _, c in EXAMPLES}
    assert seen == set(CONTROLLER_COMMANDS) | set(CONSUMER_GROUP_COMMANDS)


@pytest.mark.parametrize(
    ("commands", "old", "expected"),
    [
        (
            CONTROLLER_COMMANDS,
            {"op": "create_partitions", "name": "t", "topic_id": 4, "from": 2, "replicas": [[3]]},
            CreatePartitions(name="t", topic_id=4, from_count=2, replicas=((3,),)),
        ),
        (CONTROLLER_COMMANDS, {"op": "allocate_producer_ids"}, AllocateProducerIds(count=1)),
        (
            CONTROLLER_COMMANDS,
            {"op": "create_topic", "name": "t", "replicas": [[1]]},
            CreateTopic(name="t", replicas=((1,),)),
        ),
        (
            CONSUMER_GROUP_COMMANDS,
            {"op": "commit", "group": "g", "offsets": [["t", 1, 2, ""]], "ts": 3},
            CommitOffsets(group_id="g", offsets=(("t", 1, 2, ""),), timestamp_ms=3),
        ),
        (
            CONSUMER_GROUP_COMMANDS,
            {"op": "join", "group": "g", "member": "m", "session_timeout_ms": 5, "topics": ["t"]},
            JoinGroup(group_id="g", member_id="m", session_timeout_ms=5, topics=("t",)),
        ),
    ],
)
def test_the_old_json_shape_reads_and_is_written(
    commands: CommandSet, old: dict[str, object], expected: object
) -> None:
    data = json.dumps(old).encode()
    got = commands.decode(data)
    assert got == expected
    again = json.loads(got.encode())
    assert {k: again[k] for k in old} == old  # the same keys, the same values


@pytest.mark.parametrize(
    ("commands", "data"),
    [
        (CONTROLLER_COMMANDS, b"not json"),
        (CONTROLLER_COMMANDS, b"[1]"),
        (CONTROLLER_COMMANDS, b'{"op": "nope"}'),
        (CONTROLLER_COMMANDS, b'{"name": "t"}'),
        (CONTROLLER_COMMANDS, b'{"op": "join", "group": "g"}'),  # the other set's op
        (CONTROLLER_COMMANDS, b'{"op": "delete_topic"}'),
        (CONTROLLER_COMMANDS, b'{"op": "delete_topic", "name": 3}'),
        (CONTROLLER_COMMANDS, b'{"op": "create_topic", "name": "t", "replicas": []}'),
        (CONTROLLER_COMMANDS, b'{"op": "create_topic", "name": "t", "replicas": [[true]]}'),
        (CONTROLLER_COMMANDS, b'{"op": "allocate_producer_ids", "count": 0}'),
        (CONTROLLER_COMMANDS, b'{"op": "allocate_producer_ids", "count": 1001}'),
        (CONTROLLER_COMMANDS, b'{"op": "register_broker", "node_id": 1, "host": "h", "port": -1}'),
        (
            CONTROLLER_COMMANDS,
            b'{"op": "alter_topic_configs", "name": "t", "topic_id": 1, "changes": {"a": 1}}',
        ),
        (CONSUMER_GROUP_COMMANDS, b'{"op": "commit", "group": "g", "offsets": [["t", 0, 1]]}'),
        (CONSUMER_GROUP_COMMANDS, b'{"op": "leave", "group": "", "members": []}'),
        (CONSUMER_GROUP_COMMANDS, b'{"op": "delete_topic", "name": "t"}'),
    ],
)
def test_a_malformed_command_is_refused_as_invalid(commands: CommandSet, data: bytes) -> None:
    with pytest.raises(BrokerError) as caught:
        commands.decode(data)
    assert caught.value.code == ErrorCode.INVALID_REQUEST


def test_a_command_is_checked_when_built() -> None:
    with pytest.raises(BrokerError, match="cannot allocate 0 producer ids"):
        AllocateProducerIds(count=0)
    with pytest.raises(BrokerError, match="replicas"):
        CreateTopic(name="t", replicas=())
    with pytest.raises(TypeError):
        DeleteTopic("t")  # type: ignore[misc]  # keyword-only
