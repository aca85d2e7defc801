"""The `liferaft` command's small promises, in process and without a cluster: --version, flags
without a value placeholder, help text that keeps its brackets, chaos run's refusals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from liferaft.cli import app

runner = CliRunner()


def test_version() -> None:
    done = runner.invoke(app, ["--version"])
    assert done.exit_code == 0 and done.stdout.startswith("liferaft ")


def test_boolean_flags_show_no_value_placeholder_and_brackets_survive() -> None:
    done = runner.invoke(app, ["topic", "create", "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0
    assert "<bool>" not in done.stdout
    assert "[a-zA-Z0-9._-]" in done.stdout
    assert "<bool>" not in runner.invoke(app, ["--help"]).stdout


def test_chaos_run_refuses_a_run_with_no_fault(tmp_path: Path) -> None:
    done = runner.invoke(app, ["chaos", "run", "--duration", "10", "--out", str(tmp_path / "o")])
    assert done.exit_code == 2
    assert "no room for a fault" in done.stderr and "15" in done.stderr
    assert not (tmp_path / "o").exists()  # nothing started, nothing written


def test_chaos_run_without_the_extra_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "toxiproxy" else real(name, *a),
    )
    done = runner.invoke(app, ["chaos", "run", "--out", str(tmp_path / "o")])
    assert done.exit_code == 3
    assert "pip install 'liferaft[chaos]'" in done.stderr
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--client", "rdkafka"], "--client must be liferaft or kafka"),
        (["--client", "kafka", "--faults", "kill,answers"], "leave it out with --client kafka"),
        (["--in-flight", "0"], "--in-flight must be positive"),
    ],
)
def test_chaos_run_refuses_bad_client_options(tmp_path: Path, args: list[str], says: str) -> None:
    done = runner.invoke(app, ["chaos", "run", *args, "--out", str(tmp_path / "o")])
    assert done.exit_code == 2, done.output
    assert says in done.stderr
    assert not (tmp_path / "o").exists()  # nothing started, nothing written
