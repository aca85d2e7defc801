"""raft/ stays a pure, deterministic state machine (DESIGN.md, STYLE.md 1 and 3).

The core may not import anything that does I/O, keeps time, runs concurrently or belongs to
the rest of the project, and may draw randomness only from the `random.Random` its host passes
in the Config. Reading the source with `ast` catches an import or a call wherever it hides
(inside a function, under TYPE_CHECKING, behind an alias), which importing the package would
not. And the core type-checks under `mypy --strict`.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

RAFT = Path(__file__).resolve().parents[2] / "raft"

FORBIDDEN_MODULES = frozenset(
    {
        # I/O, time and concurrency.
        "asyncio",
        "grpc",
        "rocksdict",
        "socket",
        "threading",
        "multiprocessing",
        "concurrent",
        "time",
        "datetime",
        "selectors",
        "os",
        "subprocess",
        # The rest of the project: imports point one way, towards raft.
        "node",
        "client",
        "chaos",
        "liferaft_proto",
        "tests",
    }
)

ALLOWED_FROM_RANDOM = frozenset({"Random"})
"""`random.Random` (the type, and the seeded default in Config) is the only thing of the
random module the core may touch; the module-level functions share one hidden global state."""


def violations(source: str, filename: str) -> list[str]:
    """Every forbidden import or use of the global random generator in `source`."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    random_aliases: set[str] = set()

    def where(node: ast.AST) -> str:
        return f"{filename}:{getattr(node, 'lineno', '?')}"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append(f"{where(node)}: import {alias.name}")
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import stays inside raft
                continue
            module = node.module or ""
            top = module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append(f"{where(node)}: from {module} import ...")
            if module == "random":
                for alias in node.names:
                    if alias.name not in ALLOWED_FROM_RANDOM:
                        found.append(f"{where(node)}: from random import {alias.name}")
    for node in ast.walk(tree):
        # random.random(), random.seed, r = random.choice ...: anything but random.Random.
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
            and node.attr not in ALLOWED_FROM_RANDOM
        ):
            found.append(f"{where(node)}: {node.value.id}.{node.attr}")
        # __import__("time") and importlib.import_module("os") dodge the import statement.
        if isinstance(node, ast.Call):
            fn = node.func
            name = (
                fn.id
                if isinstance(fn, ast.Name)
                else fn.attr
                if isinstance(fn, ast.Attribute)
                else ""
            )
            if name in ("__import__", "import_module"):
                found.append(f"{where(node)}: dynamic import")
    return found


def raft_modules() -> list[Path]:
    return sorted(RAFT.rglob("*.py"))


def test_the_core_has_modules_to_check() -> None:
    names = {p.name for p in raft_modules()}
    assert {"core.py", "log.py", "rawnode.py", "storage.py"} <= names


@pytest.mark.parametrize("path", raft_modules(), ids=lambda p: p.name)
def test_raft_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(), path.name) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asyncio", "import asyncio"),
        ("import os.path", "import os.path"),
        ("from time import monotonic", "from time import ..."),
        ("def f():\n    import socket", "import socket"),
        ("from node.partition import Partition", "from node.partition import ..."),
        ("import liferaft_proto.v1.raft_pb2 as pb", "import liferaft_proto.v1.raft_pb2"),
        ("import random\nx = random.random()", "random.random"),
        ("import random\nx = random.randint(1, 2)", "random.randint"),
        ("import random as r\nr.seed(1)", "r.seed"),
        ("import random\nf = random.choice", "random.choice"),
        ("from random import shuffle", "from random import shuffle"),
        ("t = __import__('time')", "dynamic import"),
    ],
)
def test_the_checker_catches(source: str, expected: str) -> None:
    found = violations(source, "x.py")
    assert any(expected in v for v in found), found


@pytest.mark.parametrize(
    "source",
    [
        "import random\nrng: random.Random = random.Random(0)",
        "from random import Random",
        "from . import log",
        "from raft.types import Entry",
        "import logging\nimport struct\nfrom collections import deque",
    ],
)
def test_the_checker_allows(source: str) -> None:
    assert violations(source, "x.py") == []


def test_raft_passes_mypy_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed in this environment (pip install mypy)")
    # A private cache directory: a cold run is a few seconds, and runs from other checkouts or
    # helpers cannot leave a stale or locked cache behind.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            str(RAFT),
        ],
        cwd=RAFT.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
