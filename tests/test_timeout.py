"""A hung test fails, with its stack, instead of hanging the run for good.

A librdkafka client left to the garbage collector once blocked a CI run in native code forever.
pyproject.toml's pytest settings give every test a deadline (pytest-timeout, "thread" method:
a watchdog thread that needs nothing from the stuck thread). This runs the project's own
settings on a test that blocks in a C call, with the deadline shortened to a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HUNG = """
import threading

def test_blocks_in_a_c_call():
    # The lock's acquire waits in C with the GIL released and nobody will ever release it.
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()
"""


def test_a_test_stuck_in_native_code_fails_with_its_stack(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=1",
            str(tmp_path / "test_hung.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,  # the very hang this guards against must not hang this test either
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Timeout" in out, out
    # The thread method's dump: the stuck thread's stack, down to the line that blocks.
    assert "Stack of MainThread" in out and "lock.acquire()" in out, out
