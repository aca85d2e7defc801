"""AlterPartitionReassignments (key 45): start replica moves (issue 19, node/moves.py), on the
controller leader (NOT_CONTROLLER elsewhere: Kafka's admin clients send it to the controller).

The checks and the commands are the gRPC MovePartitions' own (node/moves.py's `plan_moves` and
`start_moves`). Each partition stands alone, as in Kafka: it is planned on its own against the
metadata, a bad one gets its error and changes nothing, the good ones of the same request start.
A partition named twice in one request is refused both times (INVALID_REQUEST): which of the two
targets was meant cannot be told.

Null replicas cancel the partition's move (node/moves.py's `plan_cancel`, a CancelMove
command): it goes back to the replicas it had when the move began, one Raft change at a time, a
replica the move added removed. One that is not being moved (never, done, or cancelled already)
gets NO_REASSIGNMENT_IN_PROGRESS, as Kafka answers.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as KafkaErrorCode

from node.acl import CLUSTER, Operation
from node.controller_commands import CancelMove, MovePartition
from node.errors import BrokerError, ErrorCode
from node.kafka.handlers._common import timeout_s
from node.kafka.wire import NO_THROTTLE, NONE, Api, Ctx, Responses, error_code_of
from node.limits import shown
from node.moves import plan_cancel, plan_moves, start_moves

DEFAULT_TIMEOUT_MS = 60_000


async def handle(ctx: Ctx, request: Any, version: int) -> Any:
    r = Responses(API.key, version)
    ctl = ctx.broker.controller
    timeout = timeout_s(request.timeout, DEFAULT_TIMEOUT_MS)
    try:
        ctx.broker.authorizer.check(Operation.ALTER, CLUSTER)
        if not ctl.is_leader:
            raise BrokerError(
                ErrorCode.NOT_CONTROLLER,
                f"node {ctx.broker.node_id} is not the controller; node {ctl.leader} is",
            )
    except BrokerError as err:
        return r(
            throttle_time=NO_THROTTLE,
            error_code=error_code_of(err),
            error_message=err.message,
            responses=(),
        )
    named: dict[tuple[str, int], int] = {}
    for t in request.topics:
        for p in t.partitions:
            key = (t.name, int(p.partition_index))
            named[key] = named.get(key, 0) + 1
    outcome: dict[tuple[str, int], tuple[KafkaErrorCode, str | None]] = {}
    for t in request.topics:
        for p in t.partitions:
            key = (t.name, int(p.partition_index))
            if named[key] > 1:
                outcome[key] = (
                    KafkaErrorCode.invalid_request,
                    f"{shown(t.name)}-{key[1]} is named more than once in the request",
                )
            else:
                try:
                    cmds: list[MovePartition] | list[CancelMove]
                    if p.replicas is None:
                        cmds = plan_cancel(ctl.state, [(t.name, key[1])])
                    else:
                        wish = (t.name, key[1], [int(n) for n in p.replicas])
                        cmds = plan_moves(ctl.state, [wish])
                except BrokerError as e:
                    outcome[key] = (error_code_of(e), e.message)
                else:
                    try:
                        await start_moves(ctl, cmds, timeout)
                        outcome[key] = (NONE, None)
                    except BrokerError as e:
                        outcome[key] = (error_code_of(e), e.message)
    topics = []
    for t in request.topics:
        parts = []
        for p in t.partitions:
            code, message = outcome[(t.name, int(p.partition_index))]
            parts.append(
                r.make(
                    "ReassignablePartitionResponse",
                    partition_index=p.partition_index,
                    error_code=code,
                    error_message=message,
                )
            )
        topics.append(r.make("ReassignableTopicResponse", name=t.name, partitions=tuple(parts)))
    return r(
        throttle_time=NO_THROTTLE, error_code=NONE, error_message=None, responses=tuple(topics)
    )


API = Api(key=45, name="AlterPartitionReassignments", min_version=0, max_version=0, handle=handle)
