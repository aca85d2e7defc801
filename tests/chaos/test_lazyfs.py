"""The power-loss layer (chaos/lazyfs.py) through a real FUSE mount: what was not synced is gone
after a cut, what was synced stays, and RocksDB synced writes survive.

Needs /dev/fuse, libfuse2 and fusepy (.ci/run installs them and sets LIFERAFT_REQUIRE_FUSE=1, so
CI fails rather than skips when they are missing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.lazyfs import CONTROL_NAME, LazyFSMount, fuse_unavailable, main

_why = fuse_unavailable()
if _why is not None and os.environ.get("LIFERAFT_REQUIRE_FUSE") != "1":
    pytest.skip(f"FUSE not usable here: {_why}", allow_module_level=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[LazyFSMount]:
    with LazyFSMount(tmp_path / "root", tmp_path / "mnt", tmp_path / "lazyfs.log") as m:
        yield m


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, *, sync: bool, append: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_unsynced_write_is_gone_after_a_cut(disk: LazyFSMount) -> None:
    f = disk.mountpoint / "f"
    _write(f, b"synced", sync=True)
    _fsync(disk.mountpoint)
    _write(f, b" and not", sync=False, append=True)
    _write(disk.mountpoint / "new", b"never synced", sync=False)
    assert f.read_bytes() == b"synced and not"  # before the cut, reads see everything
    assert disk.pending()["files_with_unsynced_data"] == 2

    disk.cut()

    assert f.read_bytes() == b"synced"
    assert not (disk.mountpoint / "new").exists()  # created, never dir-synced
    assert sorted(os.listdir(disk.root)) == [".lazyfs-trash", "f"]  # the disk agrees
    assert disk.pending() == {
        "files_with_unsynced_data": 0,
        "unsynced_pages_kept": 0,
        "unsynced_name_changes": 0,
        "cuts": 1,
    }


def test_synced_write_is_kept_and_overwrites_roll_back_to_it(disk: LazyFSMount) -> None:
    f = disk.mountpoint / "f"
    _write(f, b"a" * 10_000, sync=True)
    _fsync(disk.mountpoint)
    with open(f, "r+b") as h:  # overwrite inside synced pages, then shrink: not synced
        h.seek(5000)
        h.write(b"b" * 3000)
        h.truncate(6000)
    _write(disk.mountpoint / "g", b"kept", sync=True)
    _fsync(disk.mountpoint)

    disk.cut()

    assert f.read_bytes() == b"a" * 10_000
    assert (disk.mountpoint / "g").read_bytes() == b"kept"


def test_names_survive_only_once_their_directory_is_synced(disk: LazyFSMount) -> None:
    m = disk.mountpoint
    _write(m / "CURRENT", b"old", sync=True)
    _write(m / "gone", b"x", sync=True)
    _fsync(m)
    # The RocksDB way to replace a file, without the directory fsync at the end:
    _write(m / "CURRENT.tmp", b"new", sync=True)
    os.rename(m / "CURRENT.tmp", m / "CURRENT")
    os.unlink(m / "gone")
    assert (m / "CURRENT").read_bytes() == b"new"

    disk.cut()

    assert (m / "CURRENT").read_bytes() == b"old"  # the rename is undone, the old one is back
    assert (m / "gone").read_bytes() == b"x"  # the unlink is undone
    assert not (m / "CURRENT.tmp").exists()

    _write(m / "CURRENT.tmp", b"new", sync=True)
    os.rename(m / "CURRENT.tmp", m / "CURRENT")
    os.unlink(m / "gone")
    _fsync(m)
    disk.cut()
    assert (m / "CURRENT").read_bytes() == b"new"
    assert not (m / "gone").exists()
    assert os.listdir(disk.root / ".lazyfs-trash") == []


def test_bad_commands_are_refused_and_change_nothing(disk: LazyFSMount, tmp_path: Path) -> None:
    _write(disk.mountpoint / "f", b"unsynced", sync=False)
    with pytest.raises(OSError):
        (disk.mountpoint / CONTROL_NAME).write_text("cutt\n")
    assert (disk.mountpoint / "f").read_bytes() == b"unsynced"
    assert disk.pending()["cuts"] == 0
    with pytest.raises(OSError):  # O_DIRECT is refused, so RocksDB goes through the model
        os.open(disk.mountpoint / "d", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    with pytest.raises(OSError):
        os.link(disk.mountpoint / "f", disk.mountpoint / "f2")
    assert main([str(tmp_path / "nope"), str(tmp_path / "nope2")]) == 2


_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from rocksdict import Options, Rdict, WriteOptions
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    db = Rdict(sys.argv[1], opts)
    synced, unsynced = WriteOptions(), WriteOptions()
    synced.sync, unsynced.sync = True, False
    for i in range(500):
        db.put(b"k%04d" % i, b"v" * 3000, synced)
    for i in range(500, 600):
        db.put(b"k%04d" % i, b"u" * 100, unsynced)
    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no close, no flush
    """
)


def _rocksdb_keys(path: Path) -> list[bytes]:
    from rocksdict import Options, Rdict

    db = Rdict(str(path), Options(raw_mode=True))
    try:
        return list(db.keys())
    finally:
        db.close()


@pytest.mark.parametrize("cut", [True, False], ids=["power-cut", "kill-only"])
def test_rocksdb_keeps_every_synced_write_through_a_cut(disk: LazyFSMount, cut: bool) -> None:
    db = disk.mountpoint / "db"
    db.mkdir()
    _fsync(disk.mountpoint)
    done = subprocess.run([sys.executable, "-c", _WRITER, str(db)], timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL
    if cut:
        disk.cut()
    keys = _rocksdb_keys(db)
    synced = [b"k%04d" % i for i in range(500)]
    if cut:
        assert keys == synced  # every synced write, and not one unsynced
    else:  # SIGKILL alone keeps what the process wrote, synced or not: why the cut is needed
        assert keys == synced + [b"k%04d" % i for i in range(500, 600)]


_NODE_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from node.storage import GroupUpdate, NodeStore
    from raft.types import Entry, HardState
    store = NodeStore(sys.argv[1])  # a fresh data directory, as at a node's first start
    g = store.group("p1.0")
    for i in range(1, 201):
        e = Entry(index=i, term=1, data=b"batch %d" % i)
        store.write([GroupUpdate(group=g, entries=[e], hard_state=HardState(1, 1, i))])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_fresh_node_store_keeps_its_synced_log_through_a_cut(disk: LazyFSMount) -> None:
    """Regression: NodeStore made its directory without syncing its parent, so a power cut
    soon after a node's first start took the whole database (every acknowledged entry)."""
    from node.storage import NodeStore

    path = disk.mountpoint / "raft.db"
    done = subprocess.run([sys.executable, "-c", _NODE_WRITER, str(path)], timeout=120)
    assert done.returncode == -signal.SIGKILL
    disk.cut()
    with NodeStore(path) as store:
        g = store.group("p1.0")
        assert g.last_index() == 200
        assert [e.data for e in g.entries(199, 201)] == [b"batch 199", b"batch 200"]
