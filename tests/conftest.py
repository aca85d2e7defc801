"""Options and fixtures for the whole test suite.

`pytest tests/raft --rewrite` (or `pytest --rewrite`) regenerates the expected outputs of the scenario files in
tests/raft/testdata from what the driver now prints. Review the diff before keeping it: the
point of those files is that a person has checked every line against the paper.

`cluster` is a real three-node cluster (tests/clusters.py) that serves a whole test file: a
file's tests each use their own topics, and starting nodes is the slow part. A file whose
cluster needs other node arguments, set-up first, or a fresh one per test, defines its own
`cluster` on `running_cluster`, which takes the place of this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from liferaft.launcher import DevCluster
from tests.clusters import running_cluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected outputs of tests/raft/testdata/*.txt",
    )


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DevCluster]:
    """A healthy three-node cluster for the whole test file, in a directory named after it."""
    name = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    with running_cluster(tmp_path_factory.mktemp(name)) as dev:
        yield dev
