"""One way for a test to run a real cluster: node processes on free loopback ports, real RocksDB,
real gRPC, mutual TLS between the nodes (liferaft.launcher.DevCluster).

`running_cluster(directory, nodes, extra_args)` creates the cluster, starts it, waits until it
is healthy, hands it over, and stops it (SIGTERM, then SIGKILL) however the block ends. The
fixtures are built on it: the shared module-scoped `cluster` (tests/conftest.py), the per-test
`make_cluster` (tests/integration/conftest.py), and the few of a file's own with other node
arguments or set-up to do first.

A node's log is kept in the test's temporary directory (pytest keeps the last three runs' under
/tmp/pytest-of-$USER), out of a CI log's sight: so when the cluster stops, the tail of each log
is printed if the node logged a Traceback, and of every node's log if the cluster never became
healthy, the block raised, or `failed()` (asked then) says the test failed. A failure can be read
without running it again. pytest shows what a teardown prints under the test it belongs to when
that test failed, and always with -s; a module's cluster stops in its last test's teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from liferaft.launcher import DevCluster, free_port_block

HEALTHY_WITHIN_S = 60.0
"""Start-up on a loaded 2-core CI machine: three nodes, an election, each node registered."""

TAIL_CHARS = 6000
"""How much of the end of a node's log is printed: a traceback and what led to it."""


@contextmanager
def running_cluster(
    directory: Path,
    nodes: int = 3,
    extra_args: Sequence[str] = (),
    *,
    failed: Callable[[], bool] = lambda: False,
) -> Iterator[DevCluster]:
    """A started, healthy cluster of `nodes` nodes in `directory` (each node given `extra_args`),
    stopped when the block ends, whatever happened; the node logs worth reading are printed
    then (see the module docstring)."""
    dev = DevCluster.create(directory, nodes, free_port_block(nodes), list(extra_args))
    ended_well = False
    try:
        dev.start()  # in the try: a node that fails to start must not leave the others running
        dev.wait_healthy(HEALTHY_WITHIN_S)
        yield dev
        ended_well = True
    finally:
        dev.stop()
        print_node_logs(dev, every=not ended_well or failed())


def print_node_logs(dev: DevCluster, *, every: bool = False) -> None:
    """The tail of each node log that has a Traceback in it, or of every node log (`every`)."""
    for node_id in dev.nodes:
        log = dev.log_path(node_id)
        text = log.read_text(errors="replace") if log.exists() else ""
        if text and (every or "Traceback" in text):
            print(f"\n----- node {node_id} log (tail) -----\n{text[-TAIL_CHARS:]}")
