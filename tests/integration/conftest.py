"""Real clusters for integration tests: node processes on loopback ports, real RocksDB, real gRPC,
and mutual TLS between the nodes (DevCluster makes the certificates), as a real cluster runs.

`make_cluster(n, *extra_node_args)` starts a fresh cluster in a temporary directory and stops it
(SIGTERM, then SIGKILL) when the test ends, whatever happened; a failing test's node logs are
printed so the failure can be read without re-running (both by tests/clusters.py's running_cluster,
which the module-wide `cluster` of tests/conftest.py uses too).

`kafka_clients(client)` hands a confluent-kafka or kafka-python client back and closes it when
the test ends, whatever happened (see closing.py: one left to the garbage collector can hang the
whole pytest process in librdkafka).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from liferaft.launcher import DevCluster
from tests.clusters import running_cluster
from tests.integration.closing import KafkaClients

MakeCluster = Callable[..., DevCluster]


@pytest.fixture
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeCluster]:
    def failed() -> bool:
        return getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed

    numbers = itertools.count()
    with ExitStack() as clusters:

        def make(n: int = 3, *extra_args: str) -> DevCluster:
            directory = tmp_path / f"cluster{next(numbers)}"
            return clusters.enter_context(running_cluster(directory, n, extra_args, failed=failed))

        yield make


@pytest.fixture
def kafka_clients() -> Iterator[KafkaClients]:
    with KafkaClients() as clients:
        yield clients


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
