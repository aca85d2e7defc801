"""The generated stubs: up to date, importable where they belong, and checked by --check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_committed_stubs_are_up_to_date() -> None:
    result = run(REPO / "proto" / "generate.py", "--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_notices_stale_missing_and_orphaned_stubs(tmp_path: Path) -> None:
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    stubs = tmp_path / "liferaft_proto" / "v1"
    shutil.copytree(REPO / "liferaft_proto" / "v1", stubs)
    script = tmp_path / "proto" / "generate.py"
    assert run(script, "--check").returncode == 0

    with (stubs / "broker_pb2.py").open("a") as f:
        f.write("# edited by hand\n")
    (stubs / "raft_pb2.pyi").unlink()
    (stubs / "gone_pb2.py").write_text("# from a .proto that was deleted\n")
    result = run(script, "--check")
    assert result.returncode == 1
    assert "out of date: liferaft_proto/v1/broker_pb2.py" in result.stderr
    assert "missing: liferaft_proto/v1/raft_pb2.pyi" in result.stderr
    assert "no .proto makes it: liferaft_proto/v1/gone_pb2.py" in result.stderr
    assert "python proto/generate.py" in result.stderr

    # Generating repairs all three, and touches nothing else in the package.
    (stubs / "__init__.py").write_text('"""kept"""\n')
    assert run(script).returncode == 0
    assert run(script, "--check").returncode == 0
    assert not (stubs / "gone_pb2.py").exists()
    assert (stubs / "__init__.py").read_text() == '"""kept"""\n'


def test_stubs_import_from_their_package_and_nothing_is_called_proto() -> None:
    code = (
        "from liferaft_proto.v1 import broker_pb2, broker_pb2_grpc, raft_pb2, raft_pb2_grpc, "
        "errors_pb2\n"
        "import sys\n"
        "assert 'proto' not in sys.modules\n"
        "assert broker_pb2.DESCRIPTOR.package == 'liferaft.v1'\n"
        "assert hasattr(broker_pb2_grpc, 'BrokerStub') and hasattr(raft_pb2, 'Hello')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not (REPO / "proto" / "__init__.py").exists()


def test_records_module_is_import_light() -> None:
    code = (
        "import sys, liferaft_proto.records\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('google', 'grpc', 'raft', 'node', 'client'))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
