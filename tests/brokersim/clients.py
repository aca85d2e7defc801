"""Simulated clients: they call the nodes' handlers with request protos, as liferaft's client
does over gRPC, and record what they did and were told (tests/brokersim/history.py).

- plain producers (acks=1 or all): a batch that fails is sent again as a new batch (new values),
  so each attempt is checked on its own;
- idempotent producers (acks=all, one batch in flight per producer): a batch is sent again with
  the same producer id and sequence until it is acknowledged, as the real producer does;
- consumers: fetch every partition from its leader, from the start;
- group members: join by heartbeat, fetch what they are given, commit, sometimes leave;
- an admin: creates and deletes scratch topics, asks for producer ids;
- a trimmer: deletes records (DeleteRecords) of a checked topic, now and then with bad offsets.

Routing is the client's: metadata from any node that is up, then the leader it names; a
NOT_LEADER answer's leader hint is followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from liferaft_proto import records
from liferaft_proto.v1 import broker_pb2
from tests.brokersim.fixture import RpcError, SimCluster
from tests.brokersim.history import NOT_WRITTEN, Attempt, Commit, Deletion, History

TIMEOUT_S = 1.0
SESSION_MS = 1500


class Client:
    def __init__(
        self, name: str, cluster: SimCluster, history: History, rng: random.Random
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.history = history
        self.rng = rng
        self.leaders: dict[tuple[str, int], int] = {}

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def any_node(self) -> int:
        up = [n.id for n in self.cluster.live()] or self.cluster.ids
        return self.rng.choice(up)

    async def call(self, node: int, method: str, request: object, timeout: float = TIMEOUT_S):  # type: ignore[no-untyped-def]
        return await self.cluster.call(node, method, request, timeout)

    async def leader(self, topic: str, partition: int, refresh: bool = False) -> int:
        key = (topic, partition)
        if refresh or key not in self.leaders:
            try:
                md = await self.call(
                    self.any_node(), "Metadata", broker_pb2.MetadataRequest(topics=[topic])
                )
            except RpcError:
                return self.any_node()
            for t in md.topics:
                for p in t.partitions:
                    if p.leader_id:
                        self.leaders[(t.name, p.partition)] = p.leader_id
                    else:
                        self.leaders.pop((t.name, p.partition), None)
        return self.leaders.get(key) or self.any_node()

    def follow(self, e: RpcError, topic: str, partition: int) -> None:
        if e.leader_id:
            self.leaders[(topic, partition)] = e.leader_id
        else:
            self.leaders.pop((topic, partition), None)

    async def pause(self, lo: float = 0.01, hi: float = 0.08) -> None:
        await asyncio.sleep(self.rng.uniform(lo, hi))


class Producer(Client):
    def __init__(
        self,
        name: str,
        cluster: SimCluster,
        history: History,
        rng: random.Random,
        topic: str,
        partitions: int,
        *,
        idempotent: bool,
        acks: int,
    ) -> None:
        super().__init__(name, cluster, history, rng)
        self.topic, self.partitions = topic, partitions
        self.idempotent, self.acks = idempotent, acks
        self.pid = -1
        self.seq = [0] * partitions
        self.n = 0
        self.acked = 0

    async def run(self, until: float) -> None:
        while self.now() < until:
            if self.idempotent and self.pid < 0:
                await self._init_pid()
                continue
            p = self.rng.randrange(self.partitions)
            count = self.rng.choice((1, 1, 2, 3))
            self.n += 1
            if self.idempotent:
                await self._send_idempotent(p, count, until)
            else:
                await self._send_plain(p, count, until)
            await self.pause(0.0, 0.03)

    async def _init_pid(self) -> None:
        try:
            r = await self.call(
                self.any_node(), "InitProducerId", broker_pb2.InitProducerIdRequest()
            )
        except RpcError:
            await self.pause(0.05, 0.2)
            return
        self.pid = r.producer_id
        self.history.producer_id(r.producer_id, self.name)

    def _values(self, count: int, attempt: int) -> tuple[bytes, ...]:
        return tuple(f"{self.name}:{self.n}.{attempt}:{k}".encode() for k in range(count))

    async def _send_plain(self, p: int, count: int, until: float) -> None:
        for attempt in range(4):
            values = self._values(count, attempt)
            batch = records.build_batch([records.Record(value=v) for v in values])
            a = Attempt(self.name, (self.topic, p), values, self.acks, False, sent_at=self.now())
            self.history.attempts.append(a)
            if await self._produce(a, batch) or self.now() >= until:
                return
            await self.pause()

    async def _send_idempotent(self, p: int, count: int, until: float) -> None:
        values = self._values(count, 0)
        batch = records.build_batch(
            [records.Record(value=v) for v in values],
            producer_id=self.pid,
            producer_epoch=0,
            base_sequence=self.seq[p],
        )
        while True:
            a = Attempt(self.name, (self.topic, p), values, -1, True, sent_at=self.now())
            self.history.attempts.append(a)
            if await self._produce(a, batch):
                self.seq[p] += count
                return
            if a.code in ("OUT_OF_ORDER_SEQUENCE_NUMBER", "UNKNOWN_PRODUCER_ID"):
                self.history.fail(
                    "idempotent sequences accepted",
                    f"{self.name} (producer {self.pid}, one batch in flight) sent sequence "
                    f"{self.seq[p]} to {self.topic}-{p} and was told {a.code}: {a.code and ''}",
                )
                self.pid = -1  # start over with a new id, as the client would
                return
            if self.now() >= until + 3.0:  # give up late: the batch stays unknown
                return
            await self.pause()

    async def _produce(self, a: Attempt, batch: bytes) -> bool:
        topic, p = a.tp
        node = await self.leader(topic, p)
        req = broker_pb2.ProduceRequest(
            topic=topic, partition=p, records=batch, acks=a.acks, timeout_ms=int(TIMEOUT_S * 1000)
        )
        try:
            r = await self.call(node, "Produce", req, TIMEOUT_S + 0.2)
        except RpcError as e:
            a.code = e.code
            if e.code == "DUPLICATE_SEQUENCE_NUMBER":
                a.outcome = "ok"
                self.acked += len(a.values)
                return True
            if e.code in NOT_WRITTEN and not a.idempotent:
                a.outcome = "not written"
            if e.code in ("NOT_LEADER", "LEADER_NOT_AVAILABLE"):
                self.follow(e, topic, p)
            else:
                self.leaders.pop((topic, p), None)
            return False
        a.outcome, a.offset = "ok", r.base_offset
        self.acked += len(a.values)
        return True


class Consumer(Client):
    """Reads every partition of a topic from the start, round-robin, checking each answer."""

    def __init__(
        self,
        name: str,
        cluster: SimCluster,
        history: History,
        rng: random.Random,
        topic: str,
        partitions: int,
    ) -> None:
        super().__init__(name, cluster, history, rng)
        self.topic, self.partitions = topic, partitions
        self.position = [0] * partitions

    async def run(self, until: float) -> None:
        while self.now() < until:
            p = self.rng.randrange(self.partitions)
            self.position[p] = await fetch_once(self, self.topic, p, self.position[p])
            await self.pause(0.02, 0.1)


async def fetch_once(c: Client, topic: str, p: int, offset: int) -> int:
    """One Fetch at `offset` from the leader; the answer is checked and recorded. Returns the
    next position (the same on an error; the log start if the position fell below it)."""
    node = await c.leader(topic, p)
    req = broker_pb2.FetchRequest(
        topic=topic, partition=p, offset=offset, max_bytes=8 << 10, max_wait_ms=50
    )
    try:
        r = await c.call(node, "Fetch", req)
    except RpcError as e:
        if e.code == "OFFSET_OUT_OF_RANGE":
            try:
                lo = await c.call(
                    node,
                    "ListOffsets",
                    broker_pb2.ListOffsetsRequest(
                        topic=topic, partition=p, spec=broker_pb2.ListOffsetsRequest.EARLIEST
                    ),
                )
                return max(offset, lo.offset) if lo.offset > offset else offset
            except RpcError:
                return offset
        c.follow(e, topic, p)
        return offset
    batches = [
        (h.base_offset, [rec.value or b"" for rec in records.iter_records(bytes(raw))])
        for h, raw in records.split_batches(r.records)
    ]
    c.history.read((topic, p), offset, batches, r.high_watermark, r.log_start_offset)
    if batches:
        base, values = batches[-1]
        return max(offset, base + len(values))
    return offset


class GroupMember(Client):
    """A consumer group member: heartbeats, fetches what it is given, commits, may leave."""

    def __init__(
        self,
        name: str,
        cluster: SimCluster,
        history: History,
        rng: random.Random,
        group: str,
        topic: str,
    ) -> None:
        super().__init__(name, cluster, history, rng)
        self.group, self.topic = group, topic
        self.member_id = ""
        self.generation = 0
        self.owned: set[tuple[str, int]] = set()
        self.position: dict[tuple[str, int], int] = {}
        self.coordinator = 0

    async def _coord(self) -> int:
        if not self.coordinator:
            try:
                r = await self.call(
                    self.any_node(),
                    "FindCoordinator",
                    broker_pb2.FindCoordinatorRequest(group_id=self.group),
                )
                self.coordinator = r.node_id
            except RpcError:
                return self.any_node()
        return self.coordinator

    async def run(self, until: float) -> None:
        while self.now() < until:
            await self._heartbeat()
            for tp in sorted(self.owned):
                pos = self.position.get(tp, 0)
                self.position[tp] = await fetch_once(self, tp[0], tp[1], pos)
            if self.owned and self.rng.random() < 0.5:
                await self._commit()
            if self.member_id and self.rng.random() < 0.03:
                await self._leave()
            await self.pause(0.05, 0.2)

    async def _heartbeat(self) -> None:
        owned = [
            broker_pb2.TopicPartitions(
                topic=self.topic, partitions=sorted(p for _, p in self.owned)
            )
        ]
        req = broker_pb2.GroupHeartbeatRequest(
            group_id=self.group,
            member_id=self.member_id,
            generation=self.generation,
            client_id=self.name,
            topics=[self.topic],
            owned=owned if self.owned else [],
            session_timeout_ms=SESSION_MS,
        )
        try:
            r = await self.call(await self._coord(), "GroupHeartbeat", req)
        except RpcError as e:
            if e.code == "UNKNOWN_MEMBER_ID":
                self.member_id, self.owned = "", set()
            self.coordinator = e.leader_id if e.code == "NOT_COORDINATOR" else 0
            return
        self.member_id, self.generation = r.member_id, r.generation
        self.owned = {(tp.topic, p) for tp in r.assignment for p in tp.partitions}

    async def _commit(self) -> None:
        tps = sorted(self.owned)
        now = self.now()
        commits = [Commit(self.group, tp, self.position.get(tp, 0), now) for tp in tps]
        req = broker_pb2.CommitOffsetsRequest(
            group_id=self.group,
            member_id=self.member_id,
            generation=self.generation,
            offsets=[
                broker_pb2.OffsetCommit(topic=c.tp[0], partition=c.tp[1], offset=c.offset)
                for c in commits
            ],
        )
        self.history.commits.extend(commits)
        try:
            await self.call(await self._coord(), "CommitOffsets", req)
        except RpcError as e:
            # Refused before anything was proposed: the generation, the member, the coordinator.
            if e.code in (
                "ILLEGAL_GENERATION",
                "UNKNOWN_MEMBER_ID",
                "NOT_COORDINATOR",
                "REBALANCE_IN_PROGRESS",
                "OFFSET_OUT_OF_RANGE",
                "COORDINATOR_NOT_AVAILABLE",
                "LEADER_NOT_AVAILABLE",
            ):
                for c in commits:
                    c.outcome = "not written"
            if e.code in ("NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE"):
                self.coordinator = 0
            return
        for c in commits:
            c.outcome = "ok"

    async def _leave(self) -> None:
        with contextlib.suppress(RpcError):
            await self.call(
                await self._coord(),
                "LeaveGroup",
                broker_pb2.LeaveGroupRequest(group_id=self.group, member_id=self.member_id),
            )
        self.member_id, self.owned, self.generation = "", set(), 0


class Admin(Client):
    """Creates and deletes scratch topics while the run goes on (not checked for records:
    they exercise the controller, partition creation and destruction on every node)."""

    def __init__(
        self,
        name: str,
        cluster: SimCluster,
        history: History,
        rng: random.Random,
        on_topic: Callable[[str, bool], None],
    ) -> None:
        super().__init__(name, cluster, history, rng)
        self.on_topic = on_topic
        self.k = 0

    async def run(self, until: float) -> None:
        live: list[str] = []
        while self.now() < until:
            await self.pause(0.3, 1.5)
            if live and self.rng.random() < 0.5:
                name = live.pop(self.rng.randrange(len(live)))
                req = broker_pb2.DeleteTopicsRequest(names=[name], timeout_ms=2000)
                try:
                    await self.call(self.any_node(), "DeleteTopics", req, 3.0)
                except RpcError:
                    live.append(name)
                continue
            self.k += 1
            name = f"scratch-{self.k % 3}"
            if name in live:
                continue
            req2 = broker_pb2.CreateTopicsRequest(
                topics=[broker_pb2.NewTopic(name=name, partitions=1, replication_factor=0)],
                timeout_ms=2000,
            )
            try:
                r = await self.call(self.any_node(), "CreateTopics", req2, 3.0)
            except RpcError:
                continue
            if not r.topics[0].HasField("error") or r.topics[0].error.code == 0:
                live.append(name)


class Trimmer(Client):
    """Deletes the records of the checked topics' partitions up to an offset (DeleteRecords):
    most often one at or a little below the high watermark (inside a batch or not), sometimes
    -1 (the high watermark), and now and then a bad one (above the high watermark, below -1),
    which must be refused."""

    def __init__(
        self,
        name: str,
        cluster: SimCluster,
        history: History,
        rng: random.Random,
        topics: dict[str, int],
    ) -> None:
        super().__init__(name, cluster, history, rng)
        self.topics = topics

    async def run(self, until: float) -> None:
        while self.now() < until:
            await self.pause(0.2, 0.8)
            topic = self.rng.choice(sorted(self.topics))
            p = self.rng.randrange(self.topics[topic])
            node = await self.leader(topic, p)
            try:
                hw = await self.call(
                    node,
                    "ListOffsets",
                    broker_pb2.ListOffsetsRequest(
                        topic=topic, partition=p, spec=broker_pb2.ListOffsetsRequest.LATEST
                    ),
                )
            except RpcError as e:
                self.follow(e, topic, p)
                continue
            r = self.rng.random()
            if r < 0.1:
                offset, bad = hw.offset + 10**9, True
            elif r < 0.15:
                offset, bad = -2, True
            elif r < 0.3:
                offset, bad = -1, False
            else:
                offset, bad = max(0, hw.offset - self.rng.randrange(0, 6)), False
            await self._delete(node, topic, p, offset, bad)

    async def _delete(self, node: int, topic: str, p: int, offset: int, bad: bool) -> None:
        d = Deletion((topic, p), offset, bad, sent_at=self.now())
        self.history.deletions.append(d)
        req = broker_pb2.DeleteRecordsRequest(
            topic=topic, partition=p, offset=offset, timeout_ms=int(TIMEOUT_S * 1000)
        )
        try:
            r = await self.call(node, "DeleteRecords", req, TIMEOUT_S + 0.2)
        except RpcError as e:
            d.outcome = e.code
            if e.code in ("NOT_LEADER", "LEADER_NOT_AVAILABLE"):
                self.follow(e, topic, p)
            return
        d.outcome, d.low_watermark = "ok", r.low_watermark
        self.history.deleted(d)
