"""An aiokafka service ported to liferaft's client by changing only its imports and its bootstrap
(issue 16: "an aiokafka example service ported by changing only its imports and its bootstrap
runs").

tests/client/aiokafka_service.py is written for aiokafka 0.14: a consumer group member with
deserializers and a rebalance listener, a producer with serializers, headers and timestamps,
explicit commits, committed/end_offsets/partitions_for, then an assign()-ed reader. It runs once
as it is, with real aiokafka against liferaft's Kafka listener, and once with its imports
rewritten to `client`, against the gRPC port. Both read the same input (as two consumer groups)
and must write the same output, the same one this test computes on its own.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from client import AdminClient, NewTopic, Producer
from liferaft.launcher import DevCluster

SERVICE = Path(__file__).with_name("aiokafka_service.py")
ORDERS = 60
TOMBSTONES = (17, 41)  # indexes of the orders sent as tombstones
PRICES = {"apple": 40, "pear": 55, "plum": 25}


def order(i: int) -> dict[str, Any]:
    items = {"apple": 1 + i % 3, "pear": i % 2}
    if i % 5 == 0:
        items["plum"] = 4
    return {"id": f"o-{i}", "items": {k: v for k, v in items.items() if v}}


async def seed(bootstrap: str) -> None:
    async with AdminClient(bootstrap) as admin:
        await admin.create_topics(
            [
                NewTopic("orders", 3, 3),
                NewTopic("priced-aiokafka", 3, 3),
                NewTopic("priced-liferaft", num_partitions=3, replication_factor=3),
            ]
        )
    async with Producer(bootstrap) as producer:
        for i in range(ORDERS):
            value = None if i in TOMBSTONES else json.dumps(order(i)).encode()
            await producer.send(
                "orders", value, key=f"customer-{i % 7}", timestamp_ms=1_700_000_000_000 + i
            )


def port(source: str) -> str:
    """The only change a team makes: where the names come from."""
    return source.replace("from aiokafka.errors import", "from client import").replace(
        "from aiokafka import", "from client import"
    )


def run(script: Path, bootstrap: str, sink: str, group: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            *("--bootstrap", bootstrap, "--source", "orders", "--sink", sink),
            *("--group", group, "--count", str(ORDERS)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_values() -> list[dict[str, Any]]:
    out = []
    for i in range(ORDERS):
        if i in TOMBSTONES:
            continue
        o = order(i)
        total = sum(PRICES[k] * v for k, v in o["items"].items())
        out.append({"order": o["id"], "total_cents": total, "items": len(o["items"])})
    return out


def test_the_port_changes_only_imports(tmp_path: Path) -> None:
    source = SERVICE.read_text()
    changed = [
        line
        for line in difflib.unified_diff(source.splitlines(), port(source).splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed, "the port changed nothing: is the service still importing aiokafka?"
    assert all(line[1:].startswith(("from aiokafka", "from client")) for line in changed), changed


def test_aiokafka_service_runs_the_same_on_aiokafka_and_on_the_liferaft_client(
    cluster: DevCluster, tmp_path: Path
) -> None:
    asyncio.run(seed(cluster.bootstrap))
    original = run(SERVICE, cluster.kafka_bootstrap, "priced-aiokafka", "pricer-aiokafka")
    ported_path = tmp_path / "ported_service.py"
    ported_path.write_text(port(SERVICE.read_text()))
    ported = run(ported_path, cluster.bootstrap, "priced-liferaft", "pricer-liferaft")

    # What the service should have done, computed here without either client.
    assert original["handled"] == ORDERS and original["skipped"] == len(TOMBSTONES)
    assert original["assigned"] == [0, 1, 2]
    assert set(original["lag"].values()) == {0}
    results = [r for r in original["results"] if r["key"] != "_control"]
    assert sorted((r["value"] for r in results), key=lambda v: int(v["order"][2:])) == (
        expected_values()
    )
    assert all(r["headers"][0] == ["priced-by", "pricer"] for r in results)
    assert {r["timestamp"] - 1_700_000_000_000 for r in results} == {
        i for i in range(ORDERS) if i not in TOMBSTONES
    }
    # And the port did exactly the same: same partitions, offsets, keys, values, headers,
    # timestamps, commits.
    if ported != original:
        for a, b in zip(original["results"], ported["results"], strict=False):
            if a != b:
                print("aiokafka:", a, "\nliferaft:", b)
    assert ported == original
