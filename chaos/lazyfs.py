"""A filesystem that forgets what was not synced: the power-loss layer under a node's data dir.

    python -m chaos.lazyfs ROOT MOUNTPOINT        # serve ROOT at MOUNTPOINT until unmounted
    echo cut > MOUNTPOINT/.lazyfs-control          # power cut: drop every unsynced change
    cat MOUNTPOINT/.lazyfs-control                 # what is unsynced right now (JSON)

Why. A SIGKILL keeps the kernel's page cache: every write a node made reaches the disk in the
end, synced or not, so a test that kills nodes never sees a lost write. A power cut does not keep
it. This is a FUSE passthrough filesystem (fusepy over libfuse 2, in a process of its own, as
LazyFS does it in C++) that models the page cache: what a program wrote but did not fsync is
lost at a cut. The node runs unchanged on top (RocksDB through rocksdict).

Theory of operation: write through, with an undo log. Every change goes to the backing directory
at once, so reads are plain reads of ROOT. Before a write, truncate, create, unlink, rename,
mkdir or rmdir changes anything that was synced, the layer keeps what it replaces:

- content: per file (by inode, following renames), its size at its last fsync and the 4 KiB
  pages of that synced content that were overwritten since; fsync/fdatasync of the file drops
  them (the content is durable);
- names: each namespace change since the last fsync of its directory, with how to undo it (an
  unlinked file, or one a rename replaced, is moved into ROOT/.lazyfs-trash rather than deleted,
  so that it can come back). fsync of a directory makes the changes of entries in it durable
  (a rename needs both directories synced) and empties the trash they held.

A cut restores the synced pages and sizes of every file, then undoes the namespace changes that
are not durable, newest first: the backing directory is then exactly what a disk that honours
fsync, and nothing more, would hold after power came back. The program that used the mount must
be dead before the cut (the chaos target SIGKILLs the node first); the cut is done when the
write of "cut" to the control file returns.

What survives a cut, decided the strict POSIX way (ext4 is kinder; RocksDB does not need it):
- data written and fsynced (or fdatasynced) survives, in a file whose name survives;
- a file created, renamed or unlinked survives as such only once its directory was fsynced
  after it (RocksDB fsyncs the directory after creating an SST, a MANIFEST or a WAL, and after
  renaming CURRENT); fsync of the file alone does not make its name durable;
- a file created and never dir-synced disappears; an unlinked one comes back with its synced
  content; a rename not dir-synced is undone, and the file it replaced comes back;
- metadata other than size (mode, owner, times) is passed through and not rolled back;
- hard links and symlinks are refused (ENOTSUP): the node never makes them, and modelling
  a name shared by two directories would cost more than it proves.
O_DIRECT is refused (EINVAL), so RocksDB's flushes go through this layer like every other write
(node/storage.py probes for it and does without). The mount uses direct_io (no kernel page cache
between the node and this process, so nothing stale survives a cut) and zero attribute and entry
timeouts (sizes and names are asked afresh).

Threads: fusepy serves requests on several threads; one lock orders every change and the cut.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CONTROL_NAME",
    "LazyDisk",
    "LazyFSError",
    "LazyFSMount",
    "fuse_unavailable",
    "main",
]

log = logging.getLogger("liferaft.lazyfs")

PAGE = 4096
CONTROL_NAME = ".lazyfs-control"
"""A virtual file at the mount's root: write "cut" to it to cut the power; read it for stats."""
TRASH_NAME = ".lazyfs-trash"
"""In ROOT: unlinked or replaced files wait here until their unlink is durable."""
HIDDEN = {CONTROL_NAME, TRASH_NAME}
MOUNT_TIMEOUT_S = 10.0


class LazyFSError(RuntimeError):
    """The layer could not be mounted, cut or unmounted; the message says why."""


@dataclass(slots=True)
class _Content:
    """What a cut restores one file's content to: its size and pages as of its last fsync."""

    path: str
    """Its backing path now (follows renames, and unlinks into the trash)."""
    size: int
    pages: dict[int, bytes] = field(default_factory=dict)
    """page number -> its synced bytes (only pages that start below `size`)."""


@dataclass(slots=True)
class _NameChange:
    """One namespace change not yet durable, and how a cut undoes it."""

    what: str
    undo: list[tuple[str, str, str]]
    """Steps, in order: ("remove", path, ""), ("rmdir", path, ""), ("mkdir", path, ""),
    ("move", src, dst)."""
    dirs: set[str]
    """Backing directories whose fsync this change still waits for."""
    trash: list[str] = field(default_factory=list)
    """Trash files to delete once durable."""


def _parent(path: str) -> str:
    return os.path.dirname(path.rstrip("/")) or "/"


class LazyDisk:
    """The page-cache model over a backing directory, with no FUSE in it: paths here are
    backing paths. `LazyFS` (the FUSE operations) calls it; so can a test."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.trash_dir = os.path.join(self.root, TRASH_NAME)
        shutil.rmtree(self.trash_dir, ignore_errors=True)  # a previous run's leftovers
        os.makedirs(self.trash_dir)
        self.lock = threading.RLock()
        self._content: dict[int, _Content] = {}  # inode -> synced content
        self._names: list[_NameChange] = []  # oldest first
        self._trash_seq = 0
        self.cuts = 0

    # -- content ---------------------------------------------------------------------------------
    def _synced(self, fd: int, path: str) -> _Content:
        st = os.fstat(fd)
        c = self._content.get(st.st_ino)
        if c is None:
            c = self._content[st.st_ino] = _Content(path=path, size=st.st_size)
        return c

    def _keep_pages(self, fd: int, c: _Content, start: int, end: int) -> None:
        """Keep the synced bytes of the pages of [start, end) that are about to change."""
        for page in range(start // PAGE, (max(start, end - 1)) // PAGE + 1):
            if page * PAGE < c.size and page not in c.pages:
                c.pages[page] = os.pread(fd, PAGE, page * PAGE)

    def write(self, fd: int, path: str, data: bytes, offset: int) -> int:
        with self.lock:
            if data:
                c = self._synced(fd, path)
                self._keep_pages(fd, c, offset, offset + len(data))
            return os.pwrite(fd, data, offset)

    def truncate(self, path: str, length: int, fd: int | None = None) -> None:
        with self.lock:
            f = os.open(path, os.O_RDWR) if fd is None else fd
            try:
                c = self._synced(f, path)
                size = os.fstat(f).st_size
                if length < size:
                    self._keep_pages(f, c, length, size)
                os.ftruncate(f, length)
            finally:
                if fd is None:
                    os.close(f)

    def fsync(self, fd: int) -> None:
        """The file's content is durable: forget how to undo it. (The backing file is not
        fsynced: the backing disk stands for the platter, which this model never loses.)"""
        with self.lock:
            self._content.pop(os.fstat(fd).st_ino, None)

    # -- names -----------------------------------------------------------------------------------
    def _to_trash(self, path: str) -> str:
        self._trash_seq += 1
        spot = os.path.join(self.trash_dir, f"{self._trash_seq}")
        ino = os.lstat(path).st_ino
        os.rename(path, spot)
        c = self._content.get(ino)
        if c is not None:
            c.path = spot
        return spot

    def created(self, path: str, *, directory: bool = False) -> None:
        """Record a file or directory just created at `path`."""
        with self.lock:
            step = ("rmdir" if directory else "remove", path, "")
            self._names.append(_NameChange(f"create {path}", [step], {_parent(path)}))

    def unlink(self, path: str) -> None:
        with self.lock:
            spot = self._to_trash(path)
            self._names.append(
                _NameChange(f"unlink {path}", [("move", spot, path)], {_parent(path)}, [spot])
            )

    def rmdir(self, path: str) -> None:
        with self.lock:
            os.rmdir(path)
            self._names.append(_NameChange(f"rmdir {path}", [("mkdir", path, "")], {_parent(path)}))

    def rename(self, old: str, new: str) -> None:
        with self.lock:
            undo: list[tuple[str, str, str]] = [("move", new, old)]
            trash: list[str] = []
            if os.path.lexists(new):
                if os.path.isdir(new) and not os.path.islink(new):
                    os.rmdir(new)  # only an empty one can be replaced: rename(2) says so
                    undo.append(("mkdir", new, ""))
                else:
                    spot = self._to_trash(new)
                    trash.append(spot)
                    undo.append(("move", spot, new))
            ino = os.lstat(old).st_ino
            os.rename(old, new)
            c = self._content.get(ino)
            if c is not None:
                c.path = new
            self._names.append(
                _NameChange(f"rename {old} {new}", undo, {_parent(old), _parent(new)}, trash)
            )

    def fsync_dir(self, path: str) -> None:
        """Every change of an entry in `path` is durable now (a rename, once both its
        directories are)."""
        with self.lock:
            path = path.rstrip("/") or "/"
            keep = []
            for change in self._names:
                change.dirs.discard(path)
                if change.dirs:
                    keep.append(change)
                    continue
                for spot in change.trash:
                    self._drop(spot)
            self._names = keep

    def _drop(self, spot: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            ino = os.lstat(spot).st_ino
            self._content.pop(ino, None)
            os.unlink(spot)

    # -- the cut ---------------------------------------------------------------------------------
    def pending(self) -> dict[str, int]:
        with self.lock:
            return {
                "files_with_unsynced_data": len(self._content),
                "unsynced_pages_kept": sum(len(c.pages) for c in self._content.values()),
                "unsynced_name_changes": len(self._names),
                "cuts": self.cuts,
            }

    def cut(self) -> dict[str, int]:
        """Power cut: back to what was synced. Returns what was dropped."""
        with self.lock:
            dropped = self.pending()
            for c in self._content.values():
                try:
                    fd = os.open(c.path, os.O_WRONLY)
                except FileNotFoundError:
                    continue
                try:
                    for page, data in c.pages.items():
                        os.pwrite(fd, data, page * PAGE)
                    os.ftruncate(fd, c.size)
                finally:
                    os.close(fd)
            self._content.clear()
            for change in reversed(self._names):
                for step in change.undo:
                    try:
                        _undo(step)
                    except OSError as e:  # say so, and restore as much as can be restored
                        log.error("lazyfs: cannot undo %s (%s): %s", change.what, step, e)
            self._names.clear()
            for name in os.listdir(self.trash_dir):
                self._drop(os.path.join(self.trash_dir, name))
            self.cuts += 1
            log.warning("lazyfs: power cut #%d: %s", self.cuts, dropped)
            return dropped


def _undo(step: tuple[str, str, str]) -> None:
    kind, a, b = step
    if kind == "remove":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(a)
    elif kind == "rmdir":
        shutil.rmtree(a, ignore_errors=True)
    elif kind == "mkdir":
        os.makedirs(a, exist_ok=True)
    elif kind == "move":
        os.rename(a, b)


# -- FUSE ----------------------------------------------------------------------------------------
def _operations_class() -> type:
    """The fusepy Operations subclass, built on first use: importing fusepy loads libfuse,
    which a machine without FUSE lacks (the rest of this module works without it)."""
    from fuse import FuseOSError, Operations

    def fail(code: int) -> FuseOSError:
        return FuseOSError(code)

    class LazyFS(Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self, root: str) -> None:
            self.disk = LazyDisk(root)
            self.root = self.disk.root
            self._control_out: dict[int, bytes] = {}

        def _path(self, path: str) -> str:
            first = path.lstrip("/").split("/", 1)[0]
            if first in HIDDEN:
                raise fail(errno.ENOENT)
            return os.path.join(self.root, path.lstrip("/"))

        @staticmethod
        def _is_control(path: str) -> bool:
            return path == "/" + CONTROL_NAME

        # -- attributes and directories --
        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            if self._is_control(path):
                now = time.time_ns()
                return {
                    "st_mode": stat.S_IFREG | 0o600,
                    "st_nlink": 1,
                    "st_size": 0,
                    "st_atime": now,
                    "st_mtime": now,
                    "st_ctime": now,
                }
            try:
                st = os.lstat(self._path(path))
            except OSError as e:
                raise fail(e.errno or errno.EIO) from None
            keys = ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid", "st_ino", "st_blocks")
            attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            return attrs

        def readdir(self, path: str, fh: Any) -> list[str]:
            names = os.listdir(self._path(path))
            if path == "/":
                names = [n for n in names if n not in HIDDEN]
            return [".", "..", *names]

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self.root)
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree")
            return {
                k: getattr(st, k) for k in (*keys, "f_files", "f_flag", "f_frsize", "f_namemax")
            }

        def access(self, path: str, amode: int) -> int:
            if not self._is_control(path) and not os.access(self._path(path), amode):
                raise fail(errno.EACCES)
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._path(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._path(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            os.utime(self._path(path), ns=times) if times else os.utime(self._path(path))
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            p = self._path(path)
            with self.disk.lock:
                os.mkdir(p, mode)
                self.disk.created(p, directory=True)
            return 0

        def rmdir(self, path: str) -> int:
            self._guard(self.disk.rmdir, self._path(path))
            return 0

        def unlink(self, path: str) -> int:
            self._guard(self.disk.unlink, self._path(path))
            return 0

        def rename(self, old: str, new: str) -> int:
            self._guard(self.disk.rename, self._path(old), self._path(new))
            return 0

        def link(self, target: str, source: str) -> int:
            raise fail(errno.ENOTSUP)

        def symlink(self, target: str, source: str) -> int:
            raise fail(errno.ENOTSUP)

        def mknod(self, path: str, mode: int, dev: int) -> int:
            raise fail(errno.ENOTSUP)

        def fsyncdir(self, path: str, datasync: int, fh: Any) -> int:
            self.disk.fsync_dir(self._path(path).rstrip("/") if path != "/" else self.root)
            return 0

        # -- files --
        @staticmethod
        def _flags(flags: int) -> int:
            if flags & getattr(os, "O_DIRECT", 0):
                raise fail(errno.EINVAL)
            # Read-write underneath, whatever the caller asked: keeping a page before it is
            # overwritten needs to read it. O_APPEND off: FUSE hands us the offset to write at.
            flags &= ~(os.O_ACCMODE | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_TRUNC)
            return flags | os.O_RDWR

        def open(self, path: str, fi: Any) -> int:
            if self._is_control(path):
                fi.fh = 0
                fi.direct_io = 1
                return 0
            fi.fh = self._guard(os.open, self._path(path), self._flags(fi.flags))
            fi.direct_io = 1
            return 0

        def create(self, path: str, mode: int, fi: Any) -> int:
            p = self._path(path)
            flags = self._flags(fi.flags)
            with self.disk.lock:
                fd = self._guard(os.open, p, flags | os.O_CREAT | os.O_EXCL, mode)
                self.disk.created(p)
            fi.fh = fd
            fi.direct_io = 1
            return 0

        def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
            if self._is_control(path):
                data = (json.dumps(self.disk.pending()) + "\n").encode()
                return data[offset : offset + size]
            return self._guard(os.pread, fi.fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fi: Any) -> int:
            if self._is_control(path):
                command = data.decode(errors="replace").strip()
                if command != "cut":
                    raise fail(errno.EINVAL)
                self.disk.cut()
                return len(data)
            return self._guard(self.disk.write, fi.fh, self._path(path), data, offset)

        def truncate(self, path: str, length: int, fh: Any = None) -> int:
            if self._is_control(path):
                return 0
            fd = fh.fh if fh is not None else None
            self._guard(self.disk.truncate, self._path(path), length, fd)
            return 0

        def flush(self, path: str, fi: Any) -> int:
            return 0

        def release(self, path: str, fi: Any) -> int:
            if not self._is_control(path):
                os.close(fi.fh)
            return 0

        def fsync(self, path: str, datasync: int, fi: Any) -> int:
            if not self._is_control(path):
                self._guard(self.disk.fsync, fi.fh)
            return 0

        @staticmethod
        def _guard(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except OSError as e:
                raise fail(e.errno or errno.EIO) from None

    return LazyFS


def serve(root: str, mountpoint: str, *, foreground: bool = True) -> None:
    """Mount ROOT at MOUNTPOINT and serve until unmounted (or SIGTERM)."""
    from fuse import FUSE

    ops = _operations_class()(root)
    FUSE(
        ops,
        mountpoint,
        foreground=foreground,
        raw_fi=True,
        direct_io=True,
        big_writes=True,
        max_write=131072,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        use_ino=True,
        default_permissions=True,
        fsname="lazyfs",
    )


# -- the process, from the outside --------------------------------------------------------------
def fuse_unavailable() -> str | None:
    """Why a LazyFS cannot be mounted here, or None if it can."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        return f"cannot open /dev/fuse: {e}"
    try:
        import fuse  # noqa: F401 - loads libfuse 2
    except (ImportError, OSError, EnvironmentError) as e:  # noqa: UP024 - fusepy raises it
        return f"fusepy or libfuse2 missing ({e}): pip install fusepy; apt-get install libfuse2"
    if os.geteuid() != 0 and not shutil.which("fusermount"):
        return "not root and no fusermount (apt-get install fuse)"
    return None


@dataclass
class LazyFSMount:
    """One `python -m chaos.lazyfs ROOT MOUNTPOINT` process, mounted.

    with LazyFSMount(root, mountpoint) as disk:
        ...                  # a program uses mountpoint
        disk.cut()           # after the program died: drop what it did not sync
    """

    root: Path
    mountpoint: Path
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LazyFSMount:
        why = fuse_unavailable()
        if why is not None:
            raise LazyFSError(why)
        self.root.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        log_file: IO[bytes] | int = (
            open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
            if self.log_path is not None
            else subprocess.DEVNULL
        )
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chaos.lazyfs", str(self.root), str(self.mountpoint)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if not isinstance(log_file, int):
                log_file.close()
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LazyFSError(
                    f"lazyfs on {self.mountpoint} exited {self.proc.returncode} while mounting"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if os.path.ismount(self.mountpoint):
                return self
            time.sleep(0.02)
        self.stop()
        raise LazyFSError(f"lazyfs did not mount {self.mountpoint} within {MOUNT_TIMEOUT_S:.0f}s")

    @property
    def control(self) -> Path:
        return self.mountpoint / CONTROL_NAME

    def cut(self) -> None:
        """Power cut: every change not synced is gone when this returns. Kill the program
        that used the mount first."""
        try:
            with open(self.control, "w") as f:
                f.write("cut\n")
        except OSError as e:
            raise LazyFSError(f"power cut of {self.mountpoint} failed: {e}") from e

    def pending(self) -> dict[str, int]:
        """What a cut now would drop (files, pages, name changes) and how many cuts so far."""
        try:
            return dict(json.loads(self.control.read_text()))
        except (OSError, ValueError) as e:
            raise LazyFSError(f"cannot read {self.control}: {e}") from e

    def stop(self) -> None:
        """Unmount (SIGTERM: libfuse unmounts and exits), then make sure."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if os.path.ismount(self.mountpoint):
            cmd = ["umount", "-l", str(self.mountpoint)]
            if os.geteuid() != 0:
                cmd = ["fusermount", "-u", "-z", str(self.mountpoint)]
            subprocess.run(cmd, check=False, capture_output=True, timeout=30)

    def __enter__(self) -> LazyFSMount:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def mounted(root: Path, mountpoint: Path, log_path: Path | None = None) -> Iterator[LazyFSMount]:
    with LazyFSMount(root, mountpoint, log_path) as m:
        yield m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.lazyfs",
        description="Serve ROOT at MOUNTPOINT, losing every unsynced write at a power cut "
        f"(write 'cut' to MOUNTPOINT/{CONTROL_NAME}).",
    )
    parser.add_argument("root")
    parser.add_argument("mountpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    why = fuse_unavailable()
    if why is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if not os.path.isdir(args.root) or not os.path.isdir(args.mountpoint):
        print("error: ROOT and MOUNTPOINT must be existing directories", file=sys.stderr)
        return 2
    serve(args.root, args.mountpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
