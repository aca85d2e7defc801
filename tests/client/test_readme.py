"""README.md's Python examples, run as they are printed, against a dev cluster (issue 16: "the
producer examples finish; the consumer examples read what was produced and are then
interrupted"); and mypy on a user's script finds `client` after the README's editable install.

The only change made to an example is its bootstrap address: the README says 127.0.0.1:9092,
the test cluster listens on free ports (other tests run beside it). The examples need nothing
beyond the README's `pip install -e .` (they use no compression codec; the test checks that, so
this test venv, which has the codecs, proves no more than the README's install would).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client import Consumer, TopicPartition
from liferaft.launcher import DevCluster

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "127.0.0.1:9092"
AS_IN_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)
"""Runs a script with Ctrl-C as a terminal gives it: a test run started in the background by a
shell without job control (`cmd &`) inherits SIGINT ignored, and so would the example, which
then never sees the test's Ctrl-C (this test failed twice in a `.ci/run` started that way)."""


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def example(word: str) -> str:
    found = [b for b in blocks("python") if f"from client import {word}" in b]
    assert len(found) == 1, f"README.md should have one Python example importing {word}"
    return found[0]


def pointed_at(code: str, bootstrap: str) -> str:
    assert code.count(README_ADDRESS) == 1, "the example should name its bootstrap once"
    return code.replace(README_ADDRESS, bootstrap)


def test_the_examples_need_only_the_readme_install() -> None:
    install = [line for b in blocks("sh") for line in b.splitlines() if "pip install" in line]
    assert any("install -q -e ." in line for line in install), install
    for code in blocks("python"):
        assert "compression_type" not in code, "a codec needs the compression extra"


# Its own waits add up to more than pyproject's 600 s per test: it fails on those, with their
# message, before pytest-timeout would.
@pytest.mark.timeout(900)
def test_readme_examples_run_against_a_dev_cluster(cluster: DevCluster, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LIFERAFT_BOOTSTRAP": cluster.bootstrap,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # The README's own topic, created by its own command line.
    (create,) = [
        line.split("#")[0].strip()
        for b in blocks("sh")
        for line in b.splitlines()
        if line.startswith("liferaft topic create orders")
    ]
    done = subprocess.run(
        shlex.split(create), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr

    producer = tmp_path / "producer_example.py"
    producer.write_text(pointed_at(example("Producer"), cluster.bootstrap))
    done = subprocess.run(
        [sys.executable, str(producer)],
        cwd=tmp_path,  # `client` must come from the install, not from the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    partition, offset = map(int, done.stdout.split())
    assert 0 <= partition < 3 and offset >= 0
    total = 10_001  # the example's loop, and "the last one"

    consumer = tmp_path / "consumer_example.py"
    consumer.write_text(pointed_at(example("Consumer"), cluster.bootstrap))
    proc = subprocess.Popen(
        [sys.executable, "-c", AS_IN_A_TERMINAL, str(consumer)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[tuple[int, int]] = set()
    last_one = False
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while len(seen) < total and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            p, o, _key, value = line.rstrip("\n").split(" ", 3)
            seen.add((int(p), int(o)))
            last_one = last_one or value == "b'the last one'"
        assert len(seen) == total and last_one, f"read {len(seen)} of {total} records"
        assert proc.poll() is None, "the consumer example should still be running"
    finally:
        proc.send_signal(signal.SIGINT)  # the reader presses Ctrl-C
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert "KeyboardInterrupt" in err  # it ended because it was interrupted, not on its own
    # Interrupted, it still committed what it had read and left the group ("offsets are
    # committed as you go").
    asyncio.run(committed_everything(cluster.bootstrap, total))


async def committed_everything(bootstrap: str, total: int) -> None:
    async with Consumer(bootstrap, group_id="billing") as c:
        committed = await c.committed_offsets([TopicPartition("orders", p) for p in range(3)])
    assert sum(om.offset for om in committed.values()) == total


def test_mypy_finds_client_after_the_editable_install(tmp_path: Path) -> None:
    """setuptools' default editable install is an import hook mypy cannot follow; pyproject's
    package-dir makes it a plain .pth (reinstall with `pip install -e .` after changing it)."""
    script = tmp_path / "user_script.py"
    script.write_text(
        "from client import Producer\n\n\n"
        "async def main() -> int:\n"
        '    async with Producer("127.0.0.1:9092") as producer:\n'
        '        meta = await producer.send_and_wait("orders", b"x")\n'
        "        return meta.offset\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", str(script)],
        cwd=tmp_path,  # not the repository: a user's own project
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "import-not-found" not in done.stdout, done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
