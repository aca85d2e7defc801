"""Options for the whole test suite.

`pytest tests/raft --rewrite` (or `pytest --rewrite`) regenerates the expected outputs of the scenario files in
tests/raft/testdata from what the driver now prints. Review the diff before keeping it: the
point of those files is that a person has checked every line against the paper.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected outputs of tests/raft/testdata/*.txt",
    )
