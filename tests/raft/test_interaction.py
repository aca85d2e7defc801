"""Runs the scenario files in tests/raft/testdata (see tests/raft/interaction.py)."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.raft.interaction import InteractionEnv, parse_file, run_file

TESTDATA = Path(__file__).parent / "testdata"
SCENARIOS = sorted(TESTDATA.glob("*.txt"))


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 10


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path, request: pytest.FixtureRequest) -> None:
    text = path.read_text()
    first = text.splitlines()[0] if text else ""
    assert first.startswith("#"), f"{path.name} must open with a comment saying what it is about"
    want, mismatches = run_file(text)
    if request.config.getoption("--rewrite", default=False):
        if want != text:
            path.write_text(want)
        return
    if mismatches:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                want.splitlines(keepends=True),
                fromfile=f"{path.name} (expected)",
                tofile=f"{path.name} (actual)",
            )
        )
        where = ", ".join(f"line {b.line} {b.command!r}" for b, _ in mismatches)
        pytest.fail(
            f"{len(mismatches)} block(s) differ ({where}); rerun with --rewrite if the new "
            f"behaviour is right\n{diff}",
            pytrace=False,
        )


def test_parser_rejects_a_command_without_separator() -> None:
    with pytest.raises(Exception, match="expected '----'"):
        parse_file("# about\n\ncampaign 1\nok\n")


def test_mismatch_is_reported() -> None:
    text = "# about\n\nadd-nodes 1 voters=(1)\n----\nsomething else\n"
    want, mismatches = run_file(text)
    assert len(mismatches) == 1
    assert "add-nodes 1 voters=(1)\n----\nok\n" in want


def test_unknown_command_is_an_error() -> None:
    assert InteractionEnv().run("frobnicate 1").startswith("error: unknown command")
