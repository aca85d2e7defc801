"""Real clusters for integration tests: node processes on loopback ports, real RocksDB, real gRPC,
and mutual TLS between the nodes (DevCluster makes the certificates), as a real cluster runs.

`make_cluster(n, *extra_node_args)` starts a fresh cluster in a temporary directory and stops it
(SIGTERM, then SIGKILL) when the test ends, whatever happened; a failing test's node logs are
printed so the failure can be read without re-running.

`kafka_clients(client)` hands a confluent-kafka or kafka-python client back and closes it when
the test ends, whatever happened (see closing.py: one left to the garbage collector can hang the
whole pytest process in librdkafka).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from liferaft.launcher import DevCluster, free_port_block
from tests.integration.closing import KafkaClients

MakeCluster = Callable[..., DevCluster]


@pytest.fixture
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeCluster]:
    started: list[DevCluster] = []

    def make(n: int = 3, *extra_args: str) -> DevCluster:
        dev = DevCluster.create(
            tmp_path / f"cluster{len(started)}", n, free_port_block(n), list(extra_args)
        )
        started.append(dev)
        dev.start()
        dev.wait_healthy(60)
        return dev

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for dev in started:
        dev.stop()
        if failed:
            for node_id in dev.nodes:
                log = dev.log_path(node_id)
                if log.exists():
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                    print(f"\n----- node {node_id} log (tail) -----\n{tail}")


@pytest.fixture
def kafka_clients() -> Iterator[KafkaClients]:
    with KafkaClients() as clients:
        yield clients


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
