"""Throughput of the node store's writes (a script, not a test: pytest does not collect it).

    python tests/node/bench_storage.py [--dir DIR] [--seconds 2] [--runs 3]

Each write is one NodeStore.write: for every group in it, a 100-entry append of 1 KiB entries
(random, so incompressible, like compressed record batches) and a hard state. Measured with one
group per write and with 8 groups per write (group commit: 8 times the data for one fsync), synced
and, for reference, unsynced. Only the write calls are timed (building the entries is the Raft
core's work, not storage's); "in RocksDB" is the share of that time spent in the batch write and
its fsync, the rest is Python (encoding, checksums, the in-memory tail). Each figure is the median of --runs runs, each on a fresh store.

MB is 10^6 bytes of entry data. The database goes under --dir (default: the system temp dir);
put it on the disk you want to measure: on tmpfs an fsync costs nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.storage import GroupUpdate, NodeStore
from raft import Entry, HardState

ENTRIES_PER_GROUP = 100
ENTRY_BYTES = 1024


@dataclass
class Run:
    writes: int
    data_bytes: int
    total_s: float
    rocksdb_s: float


def one_run(directory: str, groups: int, sync: bool, seconds: float) -> Run:
    payloads = [os.urandom(ENTRY_BYTES) for _ in range(997)]
    with tempfile.TemporaryDirectory(dir=directory) as d, NodeStore(Path(d) / "db") as store:
        gs = [store.group(f"p-bench-{i}") for i in range(groups)]
        writes = data = 0
        total = rocks = 0.0
        p = 0
        real_write = store._write_batch

        def timed_write(batch: Any, *, sync: bool) -> None:
            nonlocal rocks
            t = time.perf_counter()
            real_write(batch, sync=sync)
            rocks += time.perf_counter() - t

        store._write_batch = timed_write  # type: ignore[method-assign]
        while total < seconds or writes < 20:
            updates = []
            for g in gs:
                first = g.last_index() + 1
                ents = []
                for i in range(first, first + ENTRIES_PER_GROUP):
                    ents.append(Entry(index=i, term=1, data=payloads[p]))
                    p = (p + 1) % len(payloads)
                hs = HardState(term=1, vote=1, commit=first + ENTRIES_PER_GROUP - 1)
                updates.append(GroupUpdate(g, entries=ents, hard_state=hs))
            t0 = time.perf_counter()
            store.write(updates, sync=sync)
            total += time.perf_counter() - t0
            writes += 1
            data += groups * ENTRIES_PER_GROUP * ENTRY_BYTES
        return Run(writes, data, total, rocks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", default=None, help="where to create the databases")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per run")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    where = args.dir or tempfile.gettempdir()
    print(f"node store write throughput, databases under {where}, median of {args.runs} runs")
    print(f"each write: per group {ENTRIES_PER_GROUP} entries x {ENTRY_BYTES} B + a hard state\n")
    print(
        f"{'groups/write':>12} {'sync':>5} {'writes/s':>9} {'MB/s':>7} {'entries/s':>10} {'in RocksDB':>10}"
    )
    for sync in (True, False):
        for groups in (1, 8):
            runs = [one_run(where, groups, sync, args.seconds) for _ in range(args.runs)]
            wps = statistics.median(r.writes / r.total_s for r in runs)
            mbs = statistics.median(r.data_bytes / r.total_s / 1e6 for r in runs)
            eps = statistics.median(r.writes * groups * ENTRIES_PER_GROUP / r.total_s for r in runs)
            share = statistics.median(r.rocksdb_s / r.total_s for r in runs)
            print(
                f"{groups:>12} {'yes' if sync else 'no':>5} {wps:>9.0f} {mbs:>7.1f} "
                f"{eps:>10.0f} {share:>10.0%}"
            )


if __name__ == "__main__":
    main()
