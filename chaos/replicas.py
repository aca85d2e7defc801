"""Replicas compared: every node's copy of every partition log, the controller and the groups.

After a chaos run (and at the end of the integration tests' replication scenarios) the cluster
is whole and idle, so every replica of a Raft group should have applied the same log prefix. This
asks every node for its own view (the read-only ReplicaState RPC, node/replica_state.py) and
compares:

- each partition: the replicas' high watermarks, then a SHA-256 of the committed record batches
  (offsets included) over the range every replica holds, [largest log start, high watermark);
- the controller and the consumer groups: a SHA-256 of the applied state, between replicas at
  the same applied index.

Which nodes hold a partition: the partition's replicas NOW (`replica_sets`, from the metadata),
not the ones it was created with: a replica move (chaos/moves.py) adds some and removes others.
A node outside a partition's current replicas that still answers for it (a removed replica
closing its copy) is left out; a current replica that does not answer for it has not caught up
(and is a difference if it never does).

Replicas still catching up are not a difference: the comparison is asked again (every half
second, up to `timeout_s`) until every group's replicas stand at the same high watermark and
applied index. What remains then is a difference: digests that disagree, and also replicas that
never caught up, or a node that did not answer (the cluster is supposed to be whole).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from client.security import Security
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc

__all__ = ["ReplicaReport", "compare_replicas", "diff_views"]

RPC_TIMEOUT_S = 10.0


@dataclass(slots=True)
class ReplicaReport:
    differences: list[str] = field(default_factory=list)
    """One line per group whose replicas disagree (or could not be compared)."""
    partitions: int = 0
    """Partition replica sets compared."""
    state_machines: int = 0
    """Controller and groups replica sets compared."""
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences


Views = dict[str, broker_pb2.ReplicaStateResponse]
"""node address -> its answer."""


ReplicaSets = dict[str, set[int]]
""" "topic/partition" -> the node ids of its replicas now."""


def current_views(views: Views, replica_sets: ReplicaSets | None) -> Views:
    """`views` with every partition answer from a node outside that partition's current
    replicas left out (None: keep every answer)."""
    if replica_sets is None:
        return views
    out: Views = {}
    for addr, v in views.items():
        kept = broker_pb2.ReplicaStateResponse()
        kept.CopyFrom(v)
        del kept.partitions[:]
        kept.partitions.extend(
            p
            for p in v.partitions
            if v.node_id in replica_sets.get(f"{p.topic}/{p.partition}", {v.node_id})
        )
        out[addr] = kept
    return out


def missing_replicas(views: Views, replica_sets: ReplicaSets | None) -> list[str]:
    """A current replica (of a node that answered) that holds no copy of its partition."""
    if replica_sets is None:
        return []
    held: dict[int, set[str]] = {
        v.node_id: {f"{p.topic}/{p.partition}" for p in v.partitions} for v in views.values()
    }
    return [
        f"{tp}: node {n} is a replica and holds no copy"
        for tp, nodes in sorted(replica_sets.items())
        for n in sorted(nodes)
        if n in held and tp not in held[n]
    ]


def _ranges(views: Views) -> dict[str, tuple[int, int]]:
    """ "topic/partition" -> the range every replica holds: [largest log start, smallest HW)."""
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for v in views.values():
        for p in v.partitions:
            spans[f"{p.topic}/{p.partition}"].append((p.log_start_offset, p.high_watermark))
    return {
        tp: (max(s for s, _ in ss), max(max(s for s, _ in ss), min(h for _, h in ss)))
        for tp, ss in spans.items()
    }


def diff_views(views: Views, ranges: dict[str, tuple[int, int]]) -> tuple[list[str], list[str]]:
    """(differences, not yet converged) between the nodes' answers. A partition whose answers
    cover different ranges, or stand at different high watermarks or applied indexes, has not
    converged; one whose digests differ over one range differs."""
    differences: list[str] = []
    waiting: list[str] = []
    by_tp: dict[str, dict[str, broker_pb2.PartitionReplicaState]] = defaultdict(dict)
    for v in views.values():
        for p in v.partitions:
            by_tp[f"{p.topic}/{p.partition}"][f"node {v.node_id}"] = p
    for tp, reps in sorted(by_tp.items()):
        hws = {n: p.high_watermark for n, p in reps.items()}
        covered = {n: (p.digest_from, p.digest_to) for n, p in reps.items()}
        if len(set(hws.values())) > 1:
            waiting.append(f"{tp}: high watermarks differ {dict(sorted(hws.items()))}")
            continue
        if len(set(covered.values())) > 1 or set(covered.values()) != {ranges.get(tp)}:
            waiting.append(f"{tp}: digests over different ranges {dict(sorted(covered.items()))}")
            continue
        digests = {n: p.digest[:12] for n, p in reps.items()}
        if len(set(digests.values())) > 1:
            lo, hi = next(iter(covered.values()))
            differences.append(
                f"{tp}: the logs differ over offsets [{lo}, {hi}): {dict(sorted(digests.items()))}"
            )
    for what in ("controller", "groups"):
        states = {f"node {v.node_id}": getattr(v, what) for v in views.values()}
        applied = {n: s.applied_index for n, s in states.items()}
        if len(set(applied.values())) > 1:
            waiting.append(f"{what}: applied indexes differ {dict(sorted(applied.items()))}")
            continue
        digests = {n: s.digest[:12] for n, s in states.items()}
        if len(set(digests.values())) > 1:
            index = next(iter(applied.values()))
            differences.append(
                f"{what}: the states differ at applied index {index}: "
                f"{dict(sorted(digests.items()))}"
            )
    return differences, waiting


async def _ask(
    address: str, ranges: dict[str, tuple[int, int]], security: Security
) -> broker_pb2.ReplicaStateResponse:
    request = broker_pb2.ReplicaStateRequest()
    for tp, (lo, hi) in ranges.items():
        request.ranges[tp].from_offset = lo
        request.ranges[tp].to_offset = hi
    credentials = security.channel_credentials()
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        response: broker_pb2.ReplicaStateResponse = await stub.ReplicaState(
            request, timeout=RPC_TIMEOUT_S, metadata=security.call_metadata() or None
        )
        return response


async def compare_replicas(
    addresses: Sequence[str],
    timeout_s: float = 30.0,
    *,
    replica_sets: ReplicaSets | None = None,
    security: Mapping[str, Any] | None = None,
) -> ReplicaReport:
    """Ask every node in `addresses` and compare each partition between its current replicas
    (`replica_sets`; None: every node that holds it), the controller and the groups between
    every node (module docstring). Never raises for what the cluster answers: a node that does
    not answer is a difference. `security`: the client's security options (client/security.py),
    for a cluster whose clients must log in."""
    sec = Security.from_options(security or {})
    report = ReplicaReport()
    deadline = time.monotonic() + timeout_s
    ranges: dict[str, tuple[int, int]] = {}
    while True:
        report.attempts += 1
        answers = await asyncio.gather(
            *(_ask(a, ranges, sec) for a in addresses), return_exceptions=True
        )
        views: Views = {}
        silent: list[str] = []
        for addr, answer in zip(addresses, answers, strict=True):
            if isinstance(answer, BaseException):
                detail = answer.code().name if isinstance(answer, grpc.RpcError) else repr(answer)
                silent.append(f"{addr} did not answer ReplicaState: {detail}")
            else:
                views[addr] = answer
        views = current_views(views, replica_sets)
        wanted = _ranges(views)
        differences, waiting = diff_views(views, ranges)
        waiting += missing_replicas(views, replica_sets)
        done = not silent and not waiting and wanted == ranges
        if done or time.monotonic() >= deadline:
            report.differences = (
                differences
                + silent
                + [f"not converged after {timeout_s:.0f}s: {w}" for w in waiting]
            )
            report.partitions = len(wanted)
            report.state_machines = 2 if views else 0
            return report
        ranges = wanted
        await asyncio.sleep(0.5)
