"""Replica moves (issue 19): MovePartitions, ListPartitionMoves, DecommissionNode,
CancelPartitionMoves.

Changing moves needs ALTER on the cluster, listing them DESCRIBE (as Kafka's
AlterPartitionReassignments and ListPartitionReassignments, which the Kafka listener serves
with the same planning and proposing). Each runs on the controller leader (forwarded there, node/api/admin.py's `on_controller`). The
checks and the commands are node/moves.py's `plan_moves`; a bad entry refuses the whole request
before anything is proposed, so bad input changes nothing.
"""

from __future__ import annotations

import asyncio

from liferaft_proto.v1 import broker_pb2
from node.acl import CLUSTER, Operation
from node.api.admin import on_controller
from node.api.context import ADMIN_TIMEOUT_MS, Api
from node.command import Command
from node.controller import Controller
from node.controller_commands import (
    CancelMove,
    DecommissionNode,
    MovePartition,
    RecommissionNode,
)
from node.errors import BrokerError, ErrorCode
from node.moves import (
    Move,
    move_key,
    plan_cancel,
    plan_decommission,
    plan_moves,
    plan_rebalance,
    plan_recommission,
    start_moves,
)


def _status(ctl: Controller, move: Move) -> broker_pb2.PartitionMoveStatus:
    info = ctl.state.topics.get(move.topic)
    replicas = info.replicas[move.partition] if info is not None else []
    return broker_pb2.PartitionMoveStatus(
        topic=move.topic,
        partition=move.partition,
        replicas=replicas,
        target=move.target,
        learners=move.learners,
        origin=move.origin,
        throttle_bytes_s=move.throttle_bytes_s,
        cancelled=move.cancelled,
    )


def _cancelled(cmd: CancelMove, ctl: Controller) -> broker_pb2.PartitionMoveStatus:
    """A cancel as planned: the move with its target turned back to its origin."""
    move = ctl.state.moves[move_key(cmd.name, cmd.partition)]
    out = _status(ctl, move)
    out.target[:] = move.origin
    out.cancelled = True
    return out


async def _propose(ctl: Controller, cmd: Command, what: str) -> None:
    try:
        await asyncio.wait_for(ctl.replicate_and_wait(cmd), ADMIN_TIMEOUT_MS / 1000)
    except TimeoutError:
        raise BrokerError(ErrorCode.REQUEST_TIMED_OUT, f"{what} was not recorded in time") from None


def _planned(cmd: MovePartition, ctl: Controller) -> broker_pb2.PartitionMoveStatus:
    replicas = ctl.state.topics[cmd.name].replicas[cmd.partition]
    return broker_pb2.PartitionMoveStatus(
        topic=cmd.name,
        partition=cmd.partition,
        replicas=replicas,
        target=cmd.target,
        origin=replicas,
        throttle_bytes_s=cmd.throttle_bytes_s,
    )


async def move_partitions(
    api: Api, request: broker_pb2.MovePartitionsRequest
) -> broker_pb2.MovePartitionsResponse:
    api.broker.authorizer.check(Operation.ALTER, CLUSTER)
    forwarded = await on_controller(api, "MovePartitions", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    if not request.moves:
        raise BrokerError(ErrorCode.INVALID_REQUEST, "no partition to move")
    wishes = [(m.topic, m.partition, list(m.replicas)) for m in request.moves]
    cmds = plan_moves(ctl.state, wishes, request.throttle_bytes_s)
    resp = broker_pb2.MovePartitionsResponse(started=[_planned(c, ctl) for c in cmds])
    if not request.validate_only:
        await start_moves(ctl, cmds, ADMIN_TIMEOUT_MS / 1000)
    return resp


async def list_partition_moves(
    api: Api, request: broker_pb2.ListPartitionMovesRequest
) -> broker_pb2.ListPartitionMovesResponse:
    """From this node's replica of the metadata (no forwarding: it may trail the leader's by a
    round)."""
    api.broker.authorizer.check(Operation.DESCRIBE, CLUSTER)
    ctl = api.broker.controller
    st = ctl.state
    held = {n: 0 for n in st.decommissioned}
    for info in st.topics.values():
        for p in range(info.partitions):
            for n in ctl.hosted_replicas(info, p):
                if n in held:
                    held[n] += 1
    return broker_pb2.ListPartitionMovesResponse(
        moves=[_status(ctl, st.moves[k]) for k in sorted(st.moves)],
        decommissioned=held,
    )


async def decommission_node(
    api: Api, request: broker_pb2.DecommissionNodeRequest
) -> broker_pb2.DecommissionNodeResponse:
    api.broker.authorizer.check(Operation.ALTER, CLUSTER)
    forwarded = await on_controller(api, "DecommissionNode", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    if request.cancel:
        return await _recommission(ctl, request)
    wishes = plan_decommission(ctl.state, request.node_id)
    # Planned against the state with the node still placeable: take it out for the check too.
    cmds = plan_moves(ctl.state, wishes, request.throttle_bytes_s)
    resp = broker_pb2.DecommissionNodeResponse(started=[_planned(c, ctl) for c in cmds])
    if not request.validate_only:
        await _propose(
            ctl,
            DecommissionNode(node_id=request.node_id),
            f"node {request.node_id}'s decommissioning",
        )
        await start_moves(ctl, cmds, ADMIN_TIMEOUT_MS / 1000)
    return resp


async def _recommission(
    ctl: Controller, request: broker_pb2.DecommissionNodeRequest
) -> broker_pb2.DecommissionNodeResponse:
    """Undo a decommission: back into placement, and the moves emptying the node cancelled
    (checked whole before anything is proposed)."""
    node_id = request.node_id
    cancels = plan_cancel(ctl.state, plan_recommission(ctl.state, node_id), node_id)
    resp = broker_pb2.DecommissionNodeResponse(started=[_cancelled(c, ctl) for c in cancels])
    if not request.validate_only:
        await _propose(ctl, RecommissionNode(node_id=node_id), f"node {node_id}'s recommissioning")
        await start_moves(ctl, cancels, ADMIN_TIMEOUT_MS / 1000)
    return resp


async def cancel_partition_moves(
    api: Api, request: broker_pb2.CancelPartitionMovesRequest
) -> broker_pb2.CancelPartitionMovesResponse:
    api.broker.authorizer.check(Operation.ALTER, CLUSTER)
    forwarded = await on_controller(api, "CancelPartitionMoves", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    if not request.partitions:
        raise BrokerError(ErrorCode.INVALID_REQUEST, "no partition whose move to cancel")
    cmds = plan_cancel(ctl.state, [(p.topic, p.partition) for p in request.partitions])
    resp = broker_pb2.CancelPartitionMovesResponse(cancelled=[_cancelled(c, ctl) for c in cmds])
    if not request.validate_only:
        await start_moves(ctl, cmds, ADMIN_TIMEOUT_MS / 1000)
    return resp


async def rebalance(api: Api, request: broker_pb2.RebalanceRequest) -> broker_pb2.RebalanceResponse:
    api.broker.authorizer.check(Operation.ALTER, CLUSTER)
    forwarded = await on_controller(api, "Rebalance", request)
    if forwarded is not None:
        return forwarded
    ctl = api.broker.controller
    cmds = plan_moves(ctl.state, plan_rebalance(ctl.state), request.throttle_bytes_s)
    resp = broker_pb2.RebalanceResponse(planned=[_planned(c, ctl) for c in cmds])
    if request.execute:
        await start_moves(ctl, cmds, ADMIN_TIMEOUT_MS / 1000)
    return resp
