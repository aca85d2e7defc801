"""The writer that test_storage_crash.py kills: appends to a few groups of a NodeStore forever.

    python tests/node/crash_writer.py DB_PATH SEED

It opens the store, bootstraps the groups if they are new, prints one line `ready {json}` with
each group's last index as the reopened store has it, then loops: one synced write per batch
carrying entries for every group (now and then rewriting a few of the newest entries, which
truncates a suffix and writes it again), a hard state whose commit is the new last index, and the
host key b"progress" naming every group's new last index (so a torn batch would show). After each
write returns it prints `synced {json}` and flushes. Every so often it takes a snapshot of a group
and compacts its log behind it.

Terms and data are functions of (group, index), so the checker needs no record of what was
written: whatever survives must match them.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys

from node.storage import GroupUpdate, NodeStore
from raft import ConfState, Entry, EntryType, HardState

GROUPS = ("p-orders-0", "p-orders-1", "controller")
VOTERS = ConfState(voters=frozenset({1, 2, 3}))


def term_of(index: int) -> int:
    return 1 + index // 97


def entry_of(group: str, index: int) -> Entry:
    seed = hashlib.blake2b(f"{group}/{index}".encode(), digest_size=16).digest()
    kind = EntryType.NOOP if index % 97 == 0 else EntryType.NORMAL
    return Entry(index=index, term=term_of(index), type=kind, data=seed * (1 + index % 23))


def snapshot_data(group: str, index: int) -> bytes:
    return f"{group} applied through {index}".encode()


def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    store = NodeStore(path)
    groups = [store.group(g) for g in GROUPS]
    for g in groups:
        if not g.initial_state()[1].voters:
            g.bootstrap(VOTERS)
    print("ready", json.dumps({g.group_id: g.last_index() for g in groups}), flush=True)
    while True:
        updates = []
        progress = {}
        for g in groups:
            last = g.last_index()
            start = last + 1
            if rng.random() < 0.15 and last - g.first_index() > 10:
                start = last - rng.randint(0, 8)  # rewrite (truncate and put back) a suffix
            end = last + rng.randint(1, 40)
            progress[g.group_id] = end
            updates.append(
                GroupUpdate(
                    g,
                    entries=[entry_of(g.group_id, i) for i in range(start, end + 1)],
                    hard_state=HardState(term=term_of(end), vote=1, commit=end),
                    meta=[(b"progress", json.dumps(progress).encode())] if g is groups[-1] else [],
                )
            )
        store.write(updates, sync=True)
        print("synced", json.dumps(progress), flush=True)
        if rng.random() < 0.05:
            g = rng.choice(groups)
            index = g.last_index() - rng.randint(50, 150)
            if index > g.snapshot().meta.index:
                g.create_snapshot(index, VOTERS, snapshot_data(g.group_id, index))
                g.compact(index - rng.randint(0, 40))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
