"""Random and mutated requests of every RPC of the Broker API against a live node process.

For each RPC, hypothesis sends requests built from the message's own descriptor (every field,
nested messages, maps and repeated fields included, with extremes: empty, 10,000-character
names, 20,001-element lists, int32/int64 limits, unknown enum values, corrupt record batches)
and mutations of a valid request (one or two fields replaced). The node must stay up and answer
each with success or an error carrying an ErrorDetail whose code is not UNKNOWN_SERVER_ERROR and
whose message fits the client's metadata limit; a refused request must change nothing (topics,
their high watermarks, committed offsets), and a CreateTopics / DeleteTopics / CreatePartitions /
DeleteGroups answer must change exactly the topics or groups it says it changed.

Runs about a minute in CI (LIFERAFT_FUZZ_EXAMPLES examples per RPC, 25 by default); set it
higher for a longer run, e.g. LIFERAFT_FUZZ_EXAMPLES=1000. Waits the requests may ask for are
kept short (a Fetch may wait up to 300 ms) so that every answer comes within the call deadline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft_proto import records
from liferaft_proto import status as wire_status
from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, errors_pb2
from node.limits import MAX_ERROR_MESSAGE_CHARS, MAX_TIMEOUT_MS
from tests.clusters import running_cluster

EXAMPLES = int(os.environ.get("LIFERAFT_FUZZ_EXAMPLES", "25"))
TOPIC, GROUP = "fuzz", "g"
BATCH = records.build_batch([records.Record(value=b"v", key=b"k")])
BAD_PRODUCER = records.build_batch(
    [records.Record(value=b"v")], producer_id=-5, producer_epoch=0, base_sequence=0
)

F = FieldDescriptor
_INT32 = (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32)
_INT64 = (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64)


def _strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=12),
        st.sampled_from(
            ["", TOPIC, GROUP, "new-topic", "a" * 249, "a" * 250, "y" * 10_000, "a b", "..", "\n"]
        ),
        st.text(alphabet="abc._-", min_size=1, max_size=8),
    )


def _ints(bits: int) -> st.SearchStrategy[int]:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return st.one_of(
        st.integers(-3, 5), st.sampled_from([lo, hi, lo + 1, 1 << 30]), st.integers(lo, hi)
    )


def _field(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """Values for one field (a list for a repeated field, a dict for a map)."""
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        kv = st.dictionaries(_strings(), _strings(), max_size=3)
        return st.one_of(kv, st.just({f"k{i}": "1" for i in range(100)}))
    one = _scalar(f, depth)
    if f.is_repeated:
        # Long lists of small values (long lists of 10,000-character names would be 200 MB).
        if f.type == F.TYPE_STRING:
            small: st.SearchStrategy[Any] = st.sampled_from([TOPIC, "t", ""])
        elif f.type == F.TYPE_MESSAGE:
            small = st.just({"topic": TOPIC} if "topic" in f.message_type.fields_by_name else {})
        else:
            small = one
        return st.one_of(
            st.lists(one, max_size=4),
            st.builds(lambda v, n: [v] * n, small, st.sampled_from([1001, 20_001])),
        )
    return one


def _scalar(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if f.name in ("max_wait_ms", "timeout_ms"):
        return st.one_of(st.integers(-5, 300), st.sampled_from([MAX_TIMEOUT_MS + 1, -(1 << 31)]))
    if f.name in ("partitions", "count") and f.type in _INT32 and not f.is_repeated:
        return st.one_of(st.integers(-3, 4), st.sampled_from([10_001, (1 << 31) - 1]))
    if f.type == F.TYPE_STRING:
        return _strings()
    if f.type in _INT32:
        return _ints(32)
    if f.type in _INT64:
        return _ints(64)
    if f.type == F.TYPE_UINT32:
        return st.integers(0, (1 << 32) - 1)
    if f.type == F.TYPE_UINT64:
        return st.integers(0, (1 << 64) - 1)
    if f.type == F.TYPE_BOOL:
        return st.booleans()
    if f.type == F.TYPE_ENUM:
        return st.integers(-2, 6)
    if f.type == F.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=64), st.sampled_from([BATCH, BAD_PRODUCER, BATCH[:-1], b""])
        )
    if f.type == F.TYPE_MESSAGE:
        return _message(f.message_type, depth + 1)
    raise AssertionError(f"no strategy for {f.full_name}")


def _message(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    if depth > 2:
        return st.just({})
    return st.fixed_dictionaries({}, optional={f.name: _field(f, depth) for f in desc.fields})


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    _fill(msg, values)
    return msg


def _fill(msg: Message, values: dict[str, Any]) -> None:
    desc = msg.DESCRIPTOR
    for name, value in values.items():
        f = desc.fields_by_name[name]
        target = getattr(msg, name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            target.clear()
            target.update(value)
        elif f.is_repeated:
            del target[:]
            if f.type == F.TYPE_MESSAGE:
                for v in value:
                    _fill(target.add(), v)
            else:
                target.extend(value)
        elif f.type == F.TYPE_MESSAGE:
            msg.ClearField(name)
            _fill(target, value)
            target.SetInParent()
        else:
            setattr(msg, name, value)


def _valid() -> dict[str, Message]:
    tp = broker_pb2.TopicPartitions(topic=TOPIC, partitions=[0])
    return {
        "Produce": broker_pb2.ProduceRequest(topic=TOPIC, partition=0, acks=-1, records=BATCH),
        "ProduceStream": broker_pb2.ProduceStreamRequest(
            requests=[
                broker_pb2.ProduceRequest(
                    topic=TOPIC, partition=0, acks=-1, records=BATCH, correlation_id=7
                )
            ]
        ),
        "Fetch": broker_pb2.FetchRequest(topic=TOPIC, partition=0, offset=0, max_wait_ms=10),
        "FetchStream": broker_pb2.FetchRequest(topic=TOPIC, partition=0, max_wait_ms=10),
        "Metadata": broker_pb2.MetadataRequest(topics=[TOPIC]),
        "CreateTopics": broker_pb2.CreateTopicsRequest(
            topics=[broker_pb2.NewTopic(name="created", partitions=1)], validate_only=True
        ),
        "DeleteTopics": broker_pb2.DeleteTopicsRequest(names=["nope"]),
        "CreatePartitions": broker_pb2.CreatePartitionsRequest(
            topic=TOPIC, count=3, validate_only=True
        ),
        "DescribeTopics": broker_pb2.DescribeTopicsRequest(names=[TOPIC]),
        "ListOffsets": broker_pb2.ListOffsetsRequest(
            topic=TOPIC, partition=0, spec=broker_pb2.ListOffsetsRequest.LATEST
        ),
        "InitProducerId": broker_pb2.InitProducerIdRequest(),
        "PartitionLag": broker_pb2.PartitionLagRequest(topic=TOPIC, partition=0, offset=0),
        "FindCoordinator": broker_pb2.FindCoordinatorRequest(group_id=GROUP),
        "GroupHeartbeat": broker_pb2.GroupHeartbeatRequest(
            group_id="h", client_id="c", topics=[TOPIC], session_timeout_ms=1000
        ),
        "LeaveGroup": broker_pb2.LeaveGroupRequest(group_id="h", member_id="m"),
        "CommitOffsets": broker_pb2.CommitOffsetsRequest(
            group_id=GROUP,
            generation=-1,
            offsets=[broker_pb2.OffsetCommit(topic=TOPIC, partition=0, offset=1)],
        ),
        "FetchOffsets": broker_pb2.FetchOffsetsRequest(group_id=GROUP, partitions=[tp]),
        "ListGroups": broker_pb2.ListGroupsRequest(),
        "DescribeGroup": broker_pb2.DescribeGroupRequest(group_id=GROUP),
        "DeleteGroups": broker_pb2.DeleteGroupsRequest(group_ids=["nope"]),
    }


VALID = _valid()


def _requests(rpc: str) -> st.SearchStrategy[Message]:
    base = VALID[rpc]
    cls = type(base)
    desc = cls.DESCRIPTOR
    random = _message(desc).map(lambda v: _build(cls, v))
    if not desc.fields:
        return random

    def mutate(changes: list[tuple[FieldDescriptor, Any]]) -> Message:
        msg = cls()
        msg.CopyFrom(base)
        for f, v in changes:
            _fill(msg, {f.name: v})
        return msg

    one_change = st.sampled_from(list(desc.fields)).flatmap(
        lambda f: _field(f, 0).map(lambda v: (f, v))
    )
    return st.one_of(random, st.lists(one_change, min_size=1, max_size=2).map(mutate))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker_pb2_grpc.BrokerStub]:
    with (
        running_cluster(tmp_path_factory.mktemp("fuzz"), 1) as dev,
        grpc.insecure_channel(dev.bootstrap) as channel,
    ):
        stub = broker_pb2_grpc.BrokerStub(channel)
        stub.CreateTopics(
            broker_pb2.CreateTopicsRequest(
                topics=[broker_pb2.NewTopic(name=TOPIC, partitions=2, replication_factor=1)]
            ),
            timeout=30,
        )
        stub.Produce(VALID["Produce"], timeout=30)
        stub.CommitOffsets(VALID["CommitOffsets"], timeout=30)
        yield stub


def _state(stub: broker_pb2_grpc.BrokerStub) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    """What a refused request must not change: each topic's high watermarks, and each group's
    committed offsets."""
    md = stub.Metadata(broker_pb2.MetadataRequest(), timeout=10)
    topics = {t.name: tuple(p.high_watermark for p in t.partitions) for t in md.topics}
    groups: dict[str, Any] = {}
    for g in stub.ListGroups(broker_pb2.ListGroupsRequest(), timeout=10).groups:
        offsets = stub.FetchOffsets(broker_pb2.FetchOffsetsRequest(group_id=g.group_id), timeout=10)
        if offsets.offsets:
            groups[g.group_id] = sorted(
                (o.topic, o.partition, o.offset, o.metadata) for o in offsets.offsets
            )
    return topics, groups


class _StreamRefusal(grpc.RpcError):
    """A ProduceStream request answered with its error (a value on the stream, which goes on):
    checked as a unary call's refusal would be."""

    def __init__(self, detail: errors_pb2.ErrorDetail) -> None:
        self.detail = detail


def _call(stub: broker_pb2_grpc.BrokerStub, rpc: str, req: Message) -> Message | grpc.RpcError:
    try:
        if rpc == "ProduceStream":
            # One message of requests; each is answered once, with its correlation id; the
            # first refusal is checked as a unary call's would be (a refusal changes nothing).
            stream = stub.ProduceStream(iter([req]), timeout=30)
            answers = [a for m in stream for a in m.responses]
            asked = sorted(r.correlation_id for r in req.requests)  # type: ignore[attr-defined]
            assert sorted(a.correlation_id for a in answers) == asked
            refused = [a.error for a in answers if a.HasField("error")]
            for detail in refused:
                assert detail.code != errors_pb2.UNKNOWN_SERVER_ERROR, detail.message
                assert len(detail.message) <= MAX_ERROR_MESSAGE_CHARS
            if refused and len(refused) == len(answers):
                timed_out = [d for d in refused if d.code == errors_pb2.REQUEST_TIMED_OUT]
                return _StreamRefusal((timed_out or refused)[0])
            return req
        if rpc == "FetchStream":
            stream = stub.FetchStream(req, timeout=10)
            try:
                return next(iter(stream))  # type: ignore[no-any-return]
            finally:
                stream.cancel()
        return getattr(stub, rpc)(req, timeout=10)  # type: ignore[no-any-return]
    except grpc.RpcError as e:
        return e


@pytest.mark.parametrize("rpc", sorted(VALID))
def test_random_and_mutated_requests(node: broker_pb2_grpc.BrokerStub, rpc: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(req=_requests(rpc))
    def check(req: Message) -> None:
        before = _state(node)
        answer = _call(node, rpc, req)
        after = _state(node)
        if isinstance(answer, grpc.RpcError):
            detail = (
                answer.detail
                if isinstance(answer, _StreamRefusal)
                else wire_status.error_detail(answer)
            )
            assert detail is not None, f"{rpc}: {answer.code()} without an ErrorDetail"
            assert detail.code != errors_pb2.UNKNOWN_SERVER_ERROR, detail.message
            assert len(detail.message) <= MAX_ERROR_MESSAGE_CHARS
            if detail.code != errors_pb2.REQUEST_TIMED_OUT:  # "it may still be written"
                assert after == before, f"{rpc} refused ({detail.message}) but changed state"
            return
        if rpc == "CreateTopics":
            made = {t.name for t in answer.topics if not t.error.code}  # type: ignore[attr-defined]
            made = set() if req.validate_only else made  # type: ignore[attr-defined]
            assert set(after[0]) == set(before[0]) | made
        elif rpc == "DeleteTopics":
            gone = {t.name for t in answer.topics if not t.error.code}  # type: ignore[attr-defined]
            assert set(after[0]) == set(before[0]) - gone
        elif rpc == "CreatePartitions":
            grown = set() if req.validate_only else {req.topic}  # type: ignore[attr-defined]
            assert {t: v for t, v in after[0].items() if t not in grown} == {
                t: v for t, v in before[0].items() if t not in grown
            }
            for t in grown:
                assert len(after[0][t]) == answer.partitions  # type: ignore[attr-defined]
            assert after[1] == before[1]
        elif rpc == "DeleteGroups":
            gone = {g.group_id for g in answer.groups if not g.error.code}  # type: ignore[attr-defined]
            assert after[0] == before[0]
            assert after[1] == {g: o for g, o in before[1].items() if g not in gone}
        elif rpc not in ("Produce", "ProduceStream", "CommitOffsets"):
            # Reads, joins and leaves change no topic and no committed offset.
            assert after == before, f"{rpc} answered OK and changed state"

    check()


def _refused(stub: broker_pb2_grpc.BrokerStub, rpc: str, req: Message) -> errors_pb2.ErrorDetail:
    before = _state(stub)
    answer = _call(stub, rpc, req)
    assert isinstance(answer, grpc.RpcError), f"{rpc} was accepted"
    detail = wire_status.error_detail(answer)
    assert detail is not None, answer.code()
    assert _state(stub) == before
    return detail


def test_the_issues_inputs_are_refused_and_change_nothing(
    node: broker_pb2_grpc.BrokerStub,
) -> None:
    """The cases issue 13 found by hand, each with the error a client can act on."""
    # The fuzz may have deleted the topic (DeleteTopics with its name is a valid request).
    if TOPIC not in _state(node)[0]:
        node.CreateTopics(
            broker_pb2.CreateTopicsRequest(
                topics=[broker_pb2.NewTopic(name=TOPIC, partitions=2, replication_factor=1)]
            ),
            timeout=30,
        )
    # Produce with timeout_ms=-1 wrote the batch, then answered a retriable REQUEST_TIMED_OUT.
    req = broker_pb2.ProduceRequest(topic=TOPIC, partition=1, acks=-1, timeout_ms=-1, records=BATCH)
    assert _refused(node, "Produce", req).code == errors_pb2.INVALID_REQUEST
    # Producer id -5 was taken for an idempotent producer's.
    req = broker_pb2.ProduceRequest(topic=TOPIC, partition=1, records=BAD_PRODUCER)
    assert _refused(node, "Produce", req).code == errors_pb2.INVALID_REQUEST
    # A 10,000-character name was echoed whole: a trailer past the client's 16 KiB limit.
    long = "n" * 10_000
    d = _refused(node, "Produce", broker_pb2.ProduceRequest(topic=long, records=BATCH))
    assert d.code == errors_pb2.INVALID_TOPIC and len(d.message) < 300
    d = _refused(node, "DescribeGroup", broker_pb2.DescribeGroupRequest(group_id=long))
    assert d.code == errors_pb2.INVALID_GROUP_ID and len(d.message) < 300
    # GroupHeartbeat stored a 1 MiB client id and a 20,000-topic subscription in `__groups`.
    groups = node.ListGroups(broker_pb2.ListGroupsRequest(), timeout=10)
    join = broker_pb2.GroupHeartbeatRequest(
        group_id="big", client_id="c" * (1 << 20), topics=[TOPIC], session_timeout_ms=10_000
    )
    assert _refused(node, "GroupHeartbeat", join).code == errors_pb2.INVALID_REQUEST
    join.client_id = "c"
    join.topics[:] = [f"t{i}" for i in range(20_000)]
    assert _refused(node, "GroupHeartbeat", join).code == errors_pb2.INVALID_REQUEST
    assert node.ListGroups(broker_pb2.ListGroupsRequest(), timeout=10) == groups
