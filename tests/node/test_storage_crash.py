"""Crash test of the node store: SIGKILL a writer mid-stream, reopen, and check what survived.

A real process (tests/node/crash_writer.py) appends synced batches to a few groups and reports
each synced batch on stdout. We kill it at a seeded random moment, several times over the same
database, and after each kill check, from a fresh NodeStore:

- every entry reported synced is there, with the right term and data, and none is corrupt;
- each log is contiguous from its first index to its last (reading it all finds no hole), its
  compaction point is covered by its snapshot, and the snapshot holds what was written with it;
- every batch is all or nothing: the host key written in the same batch as the entries names
  exactly the last index each group has, and each hard state's commit is its group's last index.

The writer is then restarted and must carry on from exactly where the reopened store is.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from node.storage import NodeStore
from tests.node import crash_writer
from tests.node.crash_writer import GROUPS, VOTERS, entry_of, snapshot_data, term_of

ROOT = Path(__file__).resolve().parents[2]
WRITER = Path(crash_writer.__file__).resolve()
ROUNDS = 8
TIMEOUT_S = (
    30.0  # generous bound for one wait (a slow, shared machine); never an assertion on speed
)


def pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Drain the writer's stdout as fast as it comes, so it never blocks on a full pipe and
    the kill lands wherever the writer happens to be (mid-write, mid-fsync, mid-print)."""
    for line in stream:
        if line.endswith("\n"):  # a line cut by the kill was never reported
            lines.put(line)
    lines.put(None)


def verify(path: Path, synced: dict[str, int]) -> dict[str, int]:
    """Check the reopened store against what was reported synced; return each group's last."""
    lasts = {}
    with NodeStore(path) as store:
        assert store.groups() == sorted(GROUPS)
        raw_progress = store.get_meta(b"progress")
        progress = json.loads(raw_progress) if raw_progress is not None else {}
        for gid in GROUPS:
            g = store.group(gid)  # loading checks the hard state, snapshot, runs, first/last entry
            first, last = g.first_index(), g.last_index()
            assert last >= synced.get(gid, 0), f"{gid}: synced up to {synced[gid]}, has {last}"
            assert progress.get(gid, 0) == last, f"{gid}: a torn batch ({progress} vs {last})"
            hs, cs = g.initial_state()
            assert cs == VOTERS
            if last:
                assert (hs.commit, hs.term) == (last, term_of(last)), gid
            snap = g.snapshot()
            assert first - 1 <= snap.meta.index, f"{gid}: compacted past its snapshot"
            if snap.meta.index:
                assert snap.meta.term == term_of(snap.meta.index)
                assert snap.data == snapshot_data(gid, snap.meta.index)
            if first > 1:  # compacted (a kill may land between the snapshot and the compaction)
                assert g.term(first - 1) == term_of(first - 1)
            # A fresh store holds no tail: this reads every entry from RocksDB, checking each
            # checksum, that no index is missing and that each term agrees with the term index.
            ents = g.entries(first, last + 1)
            assert ents == [entry_of(gid, i) for i in range(first, last + 1)], gid
            lasts[gid] = last
    return lasts


def test_sigkill_mid_stream_loses_nothing_synced(tmp_path: Path) -> None:
    rng = random.Random(1729)
    path = tmp_path / "db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    synced: dict[str, int] = {}
    expect_ready = {gid: 0 for gid in GROUPS}
    kills_mid_stream = 0
    for round_no in range(ROUNDS):
        stderr_path = tmp_path / f"writer-{round_no}.err"
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), str(path), str(rng.randrange(1 << 30))],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=ROOT,
                env=env,
            )
        lines: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        reader = threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        try:
            first = lines.get(timeout=TIMEOUT_S)
            assert first is not None and first.startswith("ready "), stderr_path.read_text()
            assert json.loads(first[len("ready ") :]) == expect_ready, "did not resume from disk"
            # Let it write a seeded number of batches, then kill it a seeded while later.
            for _ in range(rng.randint(3, 40)):
                line = lines.get(timeout=TIMEOUT_S)
                assert line is not None, f"writer died:\n{stderr_path.read_text()}"
                for gid, last in json.loads(line[len("synced ") :]).items():
                    synced[gid] = max(synced.get(gid, 0), last)
            time.sleep(rng.uniform(0.0, 0.05))
            assert proc.poll() is None, f"writer exited by itself:\n{stderr_path.read_text()}"
            proc.send_signal(signal.SIGKILL)
            kills_mid_stream += 1
        finally:
            proc.kill()
            proc.wait(timeout=TIMEOUT_S)
            reader.join(timeout=TIMEOUT_S)
        assert proc.returncode == -signal.SIGKILL
        # Lines still in the pipe were printed after their write returned: synced too.
        while (line := lines.get_nowait()) is not None:
            for gid, last in json.loads(line[len("synced ") :]).items():
                synced[gid] = max(synced.get(gid, 0), last)
        expect_ready = verify(path, synced)
    assert kills_mid_stream == ROUNDS
    assert min(synced.values()) > 50  # it did write a fair amount
