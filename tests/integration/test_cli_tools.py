"""The `liferaft` command as a pipeline and operator tool, against a real three-node cluster.

Each command runs as a process (`python -m liferaft`), bytes in and bytes out, as a shell pipe
would run it: produce with keys, headers and tombstones; consume with formats, JSON and a group;
and bad input, which must give a clear error, its exit code, and change nothing. One cluster
serves the module; each test uses its own topics. Nothing asserts on timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client import SyncAdminClient, SyncConsumer
from liferaft.launcher import DevCluster
from tests.integration.conftest import MakeCluster

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


@pytest.fixture
def bootstrap(cluster: DevCluster) -> str:
    return cluster.bootstrap


def run(bootstrap: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "liferaft", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "LIFERAFT_BOOTSTRAP": bootstrap, "GRPC_VERBOSITY": "ERROR"},
        cwd=REPO,
        timeout=TIMEOUT_S,
    )


def ok(bootstrap: str, *args: str, stdin: bytes = b"") -> bytes:
    done = run(bootstrap, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def records(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of the topic, read with the client: (partition, offset, key, value)."""
    with SyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
        tps = [(topic, p) for p in consumer.partitions_for(topic)]
        consumer.assign(tps)
        ends = {tp: consumer.highwater(tp) or 0 for tp in tps}
        for tp in tps:
            consumer.seek_to_end(tp)
            ends[tp] = consumer.position(tp)
            consumer.seek_to_beginning(tp)
        out = []
        while sum(consumer.position(tp) for tp in tps) < sum(ends.values()):
            for rs in consumer.getmany(timeout_ms=500).values():
                out.extend((r.partition, r.offset, r.key, r.value) for r in rs)
        return sorted(out)


def until_exit(
    bootstrap: str, code: int, *args: str, shows: set[tuple[str, str]] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the command until it exits with `code` and its JSON findings include `shows`
    (or 20 s pass: the last run is returned). Findings settle one by one (a partition's new
    election, the controller's step-down after an election timeout), so a test waits for the
    ones it asserts rather than for the first run with the right exit code."""
    deadline = time.monotonic() + 20
    while True:
        done = run(bootstrap, *args)
        if done.returncode == code and (not shows or shows <= findings(done)):
            return done
        if time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def findings(done: subprocess.CompletedProcess[bytes]) -> set[tuple[str, str]]:
    """The (kind, subject) pairs of a `cluster health --json` answer."""
    return {(f["kind"], f["subject"]) for f in json.loads(done.stdout)["findings"]}


# -- produce -----------------------------------------------------------------------------------
def test_produce_keys_headers_tombstones_and_a_summary(bootstrap: str) -> None:
    ok(bootstrap, "topic", "create", "p-keys", "-p", "2", "-r", "3")
    done = run(
        bootstrap, "produce", "p-keys", "-K", ":", "-Z", "-H", "src=cli", stdin=b"a:1\nb:\nc:null\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""  # nothing per record unless asked
    assert b"produced 3 records to p-keys" in done.stderr
    docs = [
        json.loads(line)
        for line in ok(bootstrap, "consume", "p-keys", "--from-beginning", "-n", "3", "--json")
        .decode()
        .splitlines()
    ]
    by_key = {d["key"]: d for d in docs}
    assert by_key["a"]["value"] == "1" and by_key["a"]["headers"] == [["src", "cli"]]
    assert by_key["b"]["value"] is None and by_key["b"]["tombstone"] is True
    assert by_key["c"]["value"] == "null" and by_key["c"]["tombstone"] is False

    fmt = run(
        bootstrap, "produce", "p-keys", "-f", r"%k\t%h\t%p\t%v", "--json", stdin=b"k\tx=1\t1\tv\n"
    )
    assert fmt.returncode == 0, fmt.stderr
    meta = json.loads(fmt.stdout)
    assert meta["partition"] == 1
    got = ok(
        bootstrap,
        "consume",
        "p-keys",
        "-p",
        "1",
        "--from-beginning",
        "-n",
        "1",
        "-f",
        r"%k|%h|%v\n",
    )
    assert got.endswith(b"k|x=1|v\n")


def test_produce_pipelines_many_lines_in_order(bootstrap: str) -> None:
    ok(bootstrap, "topic", "create", "p-many", "-p", "1", "-r", "3")
    lines = b"".join(b"%d\n" % i for i in range(5000))
    done = run(bootstrap, "produce", "p-many", "--acks", "all", stdin=lines)
    assert done.returncode == 0, done.stderr
    assert b"produced 5,000 records" in done.stderr or b"produced 5000 records" in done.stderr
    got = records(bootstrap, "p-many")
    assert [(o, v) for _, o, _, v in got] == [(i, b"%d" % i) for i in range(5000)]


def test_produce_bad_input_changes_nothing(bootstrap: str) -> None:
    ok(bootstrap, "topic", "create", "p-bad", "-p", "1", "-r", "3")
    unknown = run(bootstrap, "produce", "p-no-such-topic", stdin=b"x\n")
    assert unknown.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in unknown.stderr
    for args, why in [
        (["-K", ":", "-f", "%k %v"], b"not both"),
        (["-f", "%k"], b"no %v"),
        (["-f", "%x %v"], b"unknown token"),
        (["-H", "novalue"], b"KEY=VALUE"),
        (["-p", "5"], b"partitions 0..0"),
        (["--acks", "2"], b"acks"),
    ]:
        done = run(bootstrap, "produce", "p-bad", *args, stdin=b"k v\n")
        assert done.returncode != 0, args
        assert why in done.stderr, (args, done.stderr)
    # A line that does not fit the format fails alone, with its number; the rest are written.
    partial = run(bootstrap, "produce", "p-bad", "-K", ":", stdin=b"a:1\nno-separator\nb:2\n")
    assert partial.returncode == 1
    assert b"line 2: does not fit the format" in partial.stderr
    assert [(k, v) for _, _, k, v in records(bootstrap, "p-bad")] == [(b"a", b"1"), (b"b", b"2")]


# -- consume -----------------------------------------------------------------------------------
def test_consume_is_binary_safe_and_marks_tombstones(bootstrap: str) -> None:
    ok(bootstrap, "topic", "create", "c-bin", "-p", "1", "-r", "3")
    ok(bootstrap, "produce", "c-bin", "-Z", stdin=b"\xff\xfe\x00\n\nnull\n")
    raw = ok(bootstrap, "consume", "c-bin", "--from-beginning", "-n", "3")
    assert raw == b"\xff\xfe\x00\n\nnull\n"
    marked = ok(
        bootstrap,
        "consume",
        "c-bin",
        "--from-beginning",
        "-n",
        "3",
        "-f",
        r"%o:%v:%S\n",
        "--null",
        "<nil>",
    )
    assert marked == b"0:\xff\xfe\x00:3\n1:<nil>:-1\n2:null:4\n"
    docs = [
        json.loads(x)
        for x in ok(
            bootstrap, "consume", "c-bin", "--from-beginning", "-n", "3", "--json"
        ).splitlines()
    ]
    assert docs[0]["value"] == {"base64": "//4A"}
    assert (docs[1]["value"], docs[1]["tombstone"]) == (None, True)
    assert (docs[2]["value"], docs[2]["tombstone"]) == ("null", False)


def test_consume_with_a_group_commits_what_it_printed(bootstrap: str) -> None:
    ok(bootstrap, "topic", "create", "c-grp", "-p", "2", "-r", "3")
    ok(bootstrap, "produce", "c-grp", stdin=b"".join(b"%d\n" % i for i in range(10)))
    first = ok(bootstrap, "consume", "c-grp", "-g", "cli-g", "--from-beginning", "-n", "4")
    second = ok(
        bootstrap, "consume", "c-grp", "-g", "cli-g", "--from-beginning", "--timeout-ms", "3000"
    )
    values = first.splitlines() + second.splitlines()
    assert sorted(values, key=int) == [b"%d" % i for i in range(10)]  # each once, none twice
    with SyncAdminClient(bootstrap) as admin:
        desc = admin.describe_group("cli-g")
    assert sum(p.committed or 0 for p in desc.partitions) == 10


def test_consume_bad_usage_exits_2(bootstrap: str) -> None:
    for args in (
        ["--from-beginning", "--offset", "1"],
        ["-g", "g", "-p", "0"],
        ["-f", "%q"],
        ["-f", "%v", "--json"],
        ["--count", "0"],
    ):
        done = run(bootstrap, "consume", "c-any", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(b"error:") or b"Error" in done.stderr


# -- topic alter-config, group seek -------------------------------------------------------------
def test_topic_alter_config_takes_effect_and_bad_values_change_nothing(bootstrap: str) -> None:
    b = bootstrap
    ok(b, "topic", "create", "ac", "-p", "1", "-r", "3", "-c", "retention.ms=600000")
    big = b"x" * 4000 + b"\n"
    ok(b, "produce", "ac", stdin=big)
    done = json.loads(
        ok(
            b,
            "topic",
            "alter-config",
            "ac",
            "-s",
            "max.message.bytes=2048",
            "-d",
            "retention.ms",
            "--json",
        )
    )
    assert done["configs"]["max.message.bytes"] == {"value": "2048", "source": "topic"}
    assert done["configs"]["retention.ms"]["source"] == "default"
    described = json.loads(ok(b, "topic", "describe", "ac", "--json"))
    assert described["configs"]["max.message.bytes"]["value"] == "2048"
    # The leader's replica took the change up: a batch over the new limit is refused.
    refused = run(b, "produce", "ac", stdin=big)
    assert refused.returncode == 1 and b"MESSAGE_TOO_LARGE" in refused.stderr

    before = json.loads(ok(b, "topic", "describe", "ac", "--json"))["configs"]
    for args, code, why in [
        (["-s", "retention.ms=soon"], 1, b"INVALID_CONFIG"),
        (["-s", "min.insync.replicas=4"], 1, b"INVALID_CONFIG"),
        (["-s", "retention.ms=5", "-d", "retention.ms"], 1, b"both set and deleted"),
        (["-s", "novalue"], 2, b"NAME=VALUE"),
        ([], 2, b"nothing to change"),
    ]:
        bad = run(b, "topic", "alter-config", "ac", *args)
        assert bad.returncode == code and why in bad.stderr, (args, bad.stderr)
    unknown = run(b, "topic", "alter-config", "ac-none", "-s", "retention.ms=5")
    assert unknown.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in unknown.stderr
    dry = run(b, "topic", "alter-config", "ac", "-s", "retention.ms=5", "--validate-only")
    assert dry.returncode == 0 and b"would set" in dry.stdout
    assert json.loads(ok(b, "topic", "describe", "ac", "--json"))["configs"] == before


def test_group_seek_sets_exact_offsets_or_nothing(bootstrap: str) -> None:
    b = bootstrap
    ok(b, "topic", "create", "gs", "-p", "2", "-r", "3")
    ok(b, "produce", "gs", "-p", "0", stdin=b"a\nb\nc\n")
    ok(b, "produce", "gs", "-p", "1", stdin=b"d\ne\n")
    ok(b, "consume", "gs", "-g", "gs-g", "--from-beginning", "-n", "5")

    def committed() -> dict[int, int | None]:
        with SyncAdminClient(b) as admin:
            return {p.partition: p.committed for p in admin.describe_group("gs-g").partitions}

    assert committed() == {0: 3, 1: 2}
    ok(b, "group", "seek", "gs-g", "-t", "gs", "--to-offset", "1", "-p", "0")
    assert committed() == {0: 1, 1: 2}
    again = ok(b, "consume", "gs", "-g", "gs-g", "-n", "2")
    assert again.splitlines() == [b"b", b"c"]
    for args, code, why in [
        (["--to-offset", "3"], 1, b"outside the log"),  # partition 1 ends at 2: neither moves
        (["--to-offset", "0", "-p", "7"], 1, b"not 7"),
        (["--to-offset", "-1"], 2, b">= 0"),
    ]:
        bad = run(b, "group", "seek", "gs-g", "-t", "gs", *args)
        assert bad.returncode == code and why in bad.stderr, (args, bad.stderr)
    assert committed() == {0: 3, 1: 2}


# -- topic add-partitions, group delete --------------------------------------------------------
def test_topic_add_partitions_grows_the_topic_and_bad_counts_change_nothing(
    bootstrap: str,
) -> None:
    b = bootstrap
    ok(b, "topic", "create", "ap", "-p", "2", "-r", "3")
    ok(b, "produce", "ap", "-p", "0", stdin=b"before\n")

    def described() -> dict:  # type: ignore[type-arg]
        return json.loads(ok(b, "topic", "describe", "ap", "--json"))

    dry = json.loads(
        ok(b, "topic", "add-partitions", "ap", "--count", "5", "--validate-only", "--json")
    )
    assert dry == {"name": "ap", "partitions": 5, "validate_only": True}
    assert len(described()["partitions"]) == 2
    done = run(b, "topic", "add-partitions", "ap", "--count", "4")
    assert done.returncode == 0 and b"grew topic ap to 4 partitions" in done.stdout, done.stderr
    parts = described()["partitions"]
    assert [p["partition"] for p in parts] == [0, 1, 2, 3]
    assert all(len(p["replicas"]) == 3 for p in parts)
    # A producer writes to a new partition, and the record is read back from it.
    meta = json.loads(ok(b, "produce", "ap", "-p", "3", "--json", stdin=b"after\n"))
    assert meta["partition"] == 3
    got = [(p, v) for p, _, _, v in records(b, "ap")]
    assert got == [(0, b"before"), (3, b"after")]

    before = described()
    for count, why in [
        ("4", b"INVALID_PARTITIONS"),  # not larger
        ("3", b"INVALID_PARTITIONS"),  # partitions are never removed
        ("0", b"INVALID_PARTITIONS"),
        ("10001", b"INVALID_PARTITIONS"),  # over the cluster's maximum
    ]:
        bad = run(b, "topic", "add-partitions", "ap", "--count", count)
        assert bad.returncode == 1 and why in bad.stderr, (count, bad.stderr)
    unknown = run(b, "topic", "add-partitions", "ap-none", "--count", "3")
    assert unknown.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in unknown.stderr
    after = described()
    assert [p["partition"] for p in after["partitions"]] == [0, 1, 2, 3]
    assert after["configs"] == before["configs"]


# -- topic delete-records ----------------------------------------------------------------------
def test_topic_delete_records_moves_the_log_start_and_bad_input_changes_nothing(
    bootstrap: str,
) -> None:
    b = bootstrap
    ok(b, "topic", "create", "trim", "-p", "2", "-r", "3")
    ok(b, "produce", "trim", "-p", "0", stdin=b"a\nb\nc\nd\ne\n")
    ok(b, "produce", "trim", "-p", "1", stdin=b"f\ng\nh\n")

    def starts() -> list[int]:
        parts = json.loads(ok(b, "topic", "describe", "trim", "--json"))["partitions"]
        return [p["log_start_offset"] for p in parts]

    done = run(b, "topic", "delete-records", "trim", "-p", "0", "--offset", "3")
    assert done.returncode == 0, done.stderr
    assert b"deleted 3 records from topic trim (1 partition)" in done.stdout, done.stdout
    assert starts() == [3, 0]
    # A reader from the beginning starts at the new log start; the records there are unchanged.
    assert ok(b, "consume", "trim", "-p", "0", "--from-beginning", "-n", "2").splitlines() == [
        b"d",
        b"e",
    ]
    for args, code, why in [
        (["-p", "0", "--offset", "99"], 1, b"OFFSET_OUT_OF_RANGE"),  # above the high watermark
        (["--all-partitions", "--offset", "4"], 1, b"partition(s) 1 (high watermark 3)"),
        (["-p", "0", "--offset", "-2"], 2, b"-1 for the high watermark"),
        (["-p", "7", "--offset", "1"], 1, b"not 7"),
        (["--offset", "1"], 2, b"which partitions?"),
        (["-p", "0", "--all-partitions", "--offset", "1"], 2, b"not both"),
    ]:
        bad = run(b, "topic", "delete-records", "trim", *args)
        assert bad.returncode == code and why in bad.stderr, (args, bad.stderr)
    unknown = run(b, "topic", "delete-records", "trim-none", "-p", "0", "--offset", "1")
    assert unknown.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in unknown.stderr
    assert starts() == [3, 0]
    # Below the log start: nothing to delete, nothing changes.
    again = json.loads(ok(b, "topic", "delete-records", "trim", "-p", "0", "-o", "1", "--json"))
    assert again["partitions"] == [
        {"partition": 0, "log_start_before": 3, "low_watermark": 3, "deleted": 0}
    ]
    # -1: up to the high watermark, in every partition.
    every = json.loads(
        ok(b, "topic", "delete-records", "trim", "--all-partitions", "--offset", "-1", "--json")
    )
    assert [(p["low_watermark"], p["deleted"]) for p in every["partitions"]] == [(5, 2), (3, 3)]
    assert starts() == [5, 3]
    ok(b, "produce", "trim", "-p", "1", stdin=b"i\n")
    assert records(b, "trim") == [(1, 3, None, b"i")]


def test_group_delete_removes_an_empty_group_only(bootstrap: str) -> None:
    b = bootstrap
    ok(b, "topic", "create", "gd", "-p", "1", "-r", "3")
    ok(b, "produce", "gd", stdin=b"a\nb\nc\n")
    ok(b, "consume", "gd", "-g", "gd-empty", "--from-beginning", "-n", "3")
    ok(b, "consume", "gd", "-g", "gd-live", "--from-beginning", "-n", "2")

    def groups() -> set[str]:
        return {g["group"] for g in json.loads(ok(b, "group", "list", "--json"))}

    def committed(group: str) -> dict[int, int | None]:
        with SyncAdminClient(b) as admin:
            return {p.partition: p.committed for p in admin.describe_group(group).partitions}

    assert {"gd-empty", "gd-live"} <= groups()
    with SyncConsumer(
        b, group_id="gd-live", auto_offset_reset="earliest", enable_auto_commit=False
    ) as member:
        member.subscribe(["gd"])
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.getmany(timeout_ms=200)
        assert member.assignment(), "the consumer never joined its group"
        live = run(b, "group", "delete", "gd-live")
        assert live.returncode == 1 and b"NON_EMPTY_GROUP" in live.stderr, live.stderr
        assert committed("gd-live") == {0: 2}
    unknown = run(b, "group", "delete", "gd-none")
    assert unknown.returncode == 1 and b"GROUP_ID_NOT_FOUND" in unknown.stderr, unknown.stderr
    bad = run(b, "group", "delete", "x" * 300)
    assert bad.returncode == 1 and b"INVALID_GROUP_ID" in bad.stderr, bad.stderr
    assert {"gd-empty", "gd-live"} <= groups()

    done = run(b, "group", "delete", "gd-empty")
    assert done.returncode == 0 and b"deleted group gd-empty" in done.stdout, done.stderr
    assert "gd-empty" not in groups()
    gone = run(b, "group", "describe", "gd-empty")
    assert gone.returncode == 1 and b"GROUP_ID_NOT_FOUND" in gone.stderr
    assert committed("gd-live") == {0: 2}
    # A new consumer of the deleted group starts afresh (its old offsets went with it).
    again = ok(b, "consume", "gd", "-g", "gd-empty", "--from-beginning", "-n", "3")
    assert again.splitlines() == [b"a", b"b", b"c"]


# -- health (last: it kills nodes, on a cluster of its own) -----------------------------------
def test_cluster_health_exit_codes_and_info_marks_dead_nodes(make_cluster: MakeCluster) -> None:
    dev = make_cluster(3)
    b = dev.bootstrap
    ok(b, "topic", "create", "h-t", "-p", "2", "-r", "3")
    healthy = run(b, "cluster", "health", "--json")
    assert healthy.returncode == 0, healthy.stdout
    assert json.loads(healthy.stdout)["status"] == "healthy"

    dev.kill(3)
    # Until the others elect new leaders for what node 3 led, those partitions have none
    # (unavailable, rightly): wait for the election, then it is degraded.
    expected = {
        ("node_down", "node 3"),
        ("under_replicated", "h-t-0"),
        ("under_replicated", "h-t-1"),
    }
    degraded = until_exit(b, 3, "cluster", "health", "--json", shows=expected)
    doc = json.loads(degraded.stdout)
    assert degraded.returncode == 3, doc
    assert doc["status"] == "degraded" and list(doc["nodes"]["down"]) == ["3"]
    assert expected <= findings(degraded), doc["findings"]
    info = json.loads(ok(b, "cluster", "info", "--json"))
    assert [(n["node_id"], n["up"]) for n in info["nodes"]] == [(1, True), (2, True), (3, False)]
    assert info["nodes"][2]["leader_of"] == [] and info["nodes"][2]["error"]
    text = ok(b, "cluster", "info").decode()
    assert "DOWN" in text

    dev.kill(2)  # a majority gone: no leader anywhere, and no dead node shown as one
    expected = {("no_controller", "controller"), ("leaderless", "h-t-0")}
    unavailable = until_exit(b, 4, "cluster", "health", "--json", shows=expected)
    doc = json.loads(unavailable.stdout)
    assert unavailable.returncode == 4, doc
    assert expected <= findings(unavailable), doc["findings"]
    info = json.loads(ok(b, "cluster", "info", "--json"))
    assert info["controller_id"] is None
    assert all(n["leader_of"] == [] for n in info["nodes"])
    assert sorted(info["without_leader"]) == ["h-t-0", "h-t-1"]
    text = run(b, "cluster", "health")
    assert text.returncode == 4 and b"no node answers as the controller leader" in text.stdout

    # A bounded, clear failure: what is missing, within --timeout.
    create = run(b, "topic", "create", "h-new", "--timeout", "3")
    assert create.returncode == 1
    assert b"controller has no leader" in create.stderr and b"unreachable peers" in create.stderr

    dev.kill(1)
    nothing = run(b, "cluster", "health", "--timeout", "2", "--json")
    assert nothing.returncode == 4
    assert json.loads(nothing.stdout)["findings"][0]["kind"] == "no_node"


def test_trace_finds_a_record_before_and_after_a_leader_kill(make_cluster: MakeCluster) -> None:
    dev = make_cluster(3)
    b = dev.bootstrap
    ok(b, "topic", "create", "tr", "-p", "1", "-r", "3")
    ok(b, "produce", "tr", stdin=b"".join(b"r%d\n" % i for i in range(10)))
    ok(b, "consume", "tr", "-g", "tr-g", "--from-beginning", "-n", "6")  # commits 6

    before = json.loads(ok(b, "trace", "tr", "0", "4", "--json"))
    assert before["status"] == "committed" and before["high_watermark"] == 10
    assert before["same_entry_everywhere"]
    assert [r["node_id"] for r in before["replicas"] if r["found"]] != []
    assert all(r["reachable"] and r["found"] and r["committed"] for r in before["replicas"])
    assert sum(r["is_leader"] for r in before["replicas"]) == 1
    assert before["groups_past"] == {"tr-g": 6}
    assert json.loads(ok(b, "trace", "tr", "0", "7", "--json"))["groups_not_past"] == {"tr-g": 6}
    beyond = json.loads(ok(b, "trace", "tr", "0", "10", "--json"))
    assert beyond["status"] == "not_written" and not any(r["found"] for r in beyond["replicas"])

    leader = before["leader"]
    dev.kill(leader)
    deadline = time.monotonic() + 20
    while True:
        after = json.loads(ok(b, "trace", "tr", "0", "4", "--json"))
        if after["leader"] not in (None, leader) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after["leader"] not in (None, leader), after
    assert after["status"] == "committed" and after["high_watermark"] == 10
    dead = [r for r in after["replicas"] if r["node_id"] == leader]
    assert dead and dead[0]["reachable"] is False and dead[0]["error"]
    live = [r for r in after["replicas"] if r["reachable"]]
    assert len(live) == 2 and all(r["found"] and r["committed"] for r in live)
    text = ok(b, "trace", "tr", "0", "4").decode()
    assert "committed" in text and "unreachable" in text

    # Bad input: a clear error, its exit code.
    unknown = run(b, "trace", "no-such", "0", "0")
    assert unknown.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in unknown.stderr
    wrong_partition = run(b, "trace", "tr", "3", "0")
    assert wrong_partition.returncode == 1 and b"partitions 0..0" in wrong_partition.stderr
    assert run(b, "trace", "tr", "0", "-1").returncode == 2


def test_describe_replica_refuses_bad_requests(bootstrap: str) -> None:
    import grpc

    from liferaft_proto import status as wire_status
    from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc

    ok(bootstrap, "topic", "create", "dr", "-p", "1", "-r", "3")
    with grpc.insecure_channel(bootstrap.split(",")[0]) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        for request, code in [
            (broker_pb2.DescribeReplicaRequest(topic="nope", partition=0, offset=0), "UNKNOWN"),
            (broker_pb2.DescribeReplicaRequest(topic="dr", partition=1, offset=0), "UNKNOWN"),
            (broker_pb2.DescribeReplicaRequest(topic="dr", partition=0, offset=-5), "OFFSET"),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                stub.DescribeReplica(request, timeout=5)
            detail = wire_status.error_detail(err.value)
            assert detail is not None
            assert code in errors_name(detail.code)
        fine = stub.DescribeReplica(
            broker_pb2.DescribeReplicaRequest(topic="dr", partition=0, offset=0), timeout=5
        )
        assert not fine.found and fine.high_watermark == 0 and fine.log_end_offset == 0


def errors_name(code: int) -> str:
    from liferaft_proto.v1 import errors_pb2

    return str(errors_pb2.ErrorCode.Name(code))
