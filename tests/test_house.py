"""The house's arrows, held: which package may import which (shared/DESIGN.md, "The house").

    raft, liferaft_proto   nothing of ours
    node                   raft, liferaft_proto
    client                 liferaft_proto
    chaos                  client, liferaft_proto, and liferaft's launcher (it starts local nodes)
    liferaft's tooling     the launcher: liferaft_proto and certs only; demo and bench: client too
    liferaft.cli.*         anything, but only inside command functions (a broker process is one)

so nothing imports chaos or a CLI sub-command module but the CLI and tests. Read from the source
with ast, so an import inside a function (a lazy one) counts as much as one at the top, and one
under `if TYPE_CHECKING:` too: each is an arrow a newcomer reads. The second half starts a real
broker process and looks at what it has loaded.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("raft", "node", "client", "chaos", "liferaft", "liferaft_proto", "tests")
LAUNCHER = ("liferaft.launcher", "liferaft.free_ports", "liferaft.certs")

RULES: dict[str, tuple[str, ...]] = {
    "raft": ("raft",),
    "liferaft_proto": ("liferaft_proto",),
    "node": ("node", "raft", "liferaft_proto"),
    "client": ("client", "liferaft_proto"),
    "chaos": ("chaos", "client", "liferaft_proto", *LAUNCHER),
    "liferaft.launcher": ("liferaft_proto", *LAUNCHER),
    "liferaft.free_ports": (),
    "liferaft.certs": (),  # makes the certificates the launcher's clusters use
    "liferaft.demo": ("client", "liferaft_proto", *LAUNCHER),
    "liferaft.bench": ("liferaft.bench", "client", "liferaft_proto", *LAUNCHER),
    "liferaft.cli": OURS,
    "liferaft": (),  # liferaft/__init__.py, liferaft/__main__.py (it imports the CLI, below)
}
"""Module prefix -> what its modules may import of ours (a module always may import itself)."""

ENTRY_POINTS = {"liferaft.__main__": ("liferaft.cli",)}
"""`python -m liferaft` is the CLI, and may import it."""

CLI_AT_LOAD = ("liferaft.cli", "liferaft_proto")
"""All a CLI module may import of ours when it is loaded; its command functions import the rest."""


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    """The importing module (node.server)."""
    target: str
    """What it imports (client.errors)."""
    line: int
    lazy: bool
    """Inside a function (runs only when the function does) or `if TYPE_CHECKING:` (never)."""

    def __str__(self) -> str:
        where = "lazily" if self.lazy else "at load"
        return f"{self.module}:{self.line} imports {self.target} ({where})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    """Every import statement of ours in one file (relative ones resolved), lazy or not."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))

    def visit(node: ast.AST, lazy: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING"):
                inner = True  # for the type checker only: never runs
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from pkg import mod` imports pkg.mod when mod is a module: count both.
                targets = [base, *(f"{base}.{alias.name}" for alias in child.names)]
            for target in targets:
                if target.split(".")[0] in OURS and _is_module(target):
                    yield Import(module, target, child.lineno, lazy)
            yield from visit(child, inner)

    yield from visit(tree, False)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_for(module: str) -> tuple[str, ...]:
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    prefix = max((p for p in RULES if _within(module, p)), key=len)
    return RULES[prefix]


def files_of(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def wrong_arrows(package: str) -> list[str]:
    wrong = []
    for path in files_of(package):
        for imp in imports_of(path):
            allowed = rule_for(imp.module)
            top = imp.module.split(".")[0]
            own = top if top != "liferaft" else imp.module
            if _within(imp.target, own):
                continue
            if not any(_within(imp.target, a) for a in allowed):
                wrong.append(str(imp))
    return wrong


@pytest.mark.parametrize(
    "package", ["raft", "liferaft_proto", "node", "client", "chaos", "liferaft"]
)
def test_imports_point_the_way_the_house_says(package: str) -> None:
    assert wrong_arrows(package) == []


def test_cli_modules_import_their_packages_only_when_a_command_runs() -> None:
    """A sub-command module loads with liferaft.cli and the wire contract only, so `liferaft
    node` (the broker) loads nothing of what `liferaft bench` or `liferaft chaos` need."""
    eager = [
        str(imp)
        for path in files_of("liferaft/cli")
        for imp in imports_of(path)
        if not imp.lazy and not any(_within(imp.target, a) for a in CLI_AT_LOAD)
    ]
    assert eager == []


def test_every_sub_command_has_its_module() -> None:
    from liferaft.cli import SUBCOMMANDS

    modules = {p.stem for p in (ROOT / "liferaft" / "cli").glob("*.py")}
    assert set(SUBCOMMANDS) <= modules
    # The rest are the helpers the sub-commands share, private by their leading underscore.
    assert all(m.startswith("_") for m in modules - set(SUBCOMMANDS))


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path) -> None:
    """The checker itself: a lazy `import chaos` in a node module is found, with its line."""
    bad = ROOT / "node" / "_house_probe.py"
    bad.write_text("def f():\n    from chaos.history import History\n    return History\n")
    try:
        assert wrong_arrows("node") == ["node._house_probe:2 imports chaos.history (lazily)"]
    finally:
        bad.unlink()


# -- what the broker's code may not write -------------------------------------------------------
PRODUCTION = ("node", "client", "chaos", "liferaft")


def op_dicts(path: Path) -> list[str]:
    """Dict literals keyed by "op": a replicated command built by hand instead of as a value
    (node/controller_commands.py, node/consumer_group_commands.py)."""
    return [
        f"{module_name(path)}:{n.lineno}"
        for n in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(n, ast.Dict)
        and any(isinstance(k, ast.Constant) and k.value == "op" for k in n.keys)
    ]


def test_commands_are_values_not_op_dicts() -> None:
    codec = ROOT / "node" / "command.py"  # Command.to_json: the one place the tag is written
    found = [
        hit
        for package in PRODUCTION
        for path in files_of(package)
        if path != codec
        for hit in op_dicts(path)
    ]
    assert found == []


def test_the_op_dict_finder_finds_one(tmp_path: Path) -> None:
    probe = ROOT / "node" / "_house_probe.py"
    probe.write_text('def f():\n    return {"op": "delete_topic", "name": "t"}\n')
    try:
        assert op_dicts(probe) == ["node._house_probe:2"]
    finally:
        probe.unlink()


INSIDE_THE_CORE = ("raft", "tracker")
"""A RawNode's private parts: its Raft (and through it the log) and its progress tracker."""


def reaches_into_the_core(path: Path) -> list[str]:
    """Attribute accesses `x.raft` or `x.tracker`: code outside raft/ must ask RawNode
    (`applied`, `term_at`, `in_sync_durable_index`, `progress_of`...), not reach into it."""
    return [
        f"{module_name(path)}:{n.lineno} .{n.attr}"
        for n in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(n, ast.Attribute) and n.attr in INSIDE_THE_CORE
    ]


def test_nothing_outside_raft_reaches_into_a_raw_node() -> None:
    found = [
        hit
        for package in (*PRODUCTION, "tests/node", "tests/integration")
        for path in files_of(package)
        for hit in reaches_into_the_core(path)
    ]
    assert found == []


def test_the_core_reach_finder_finds_one() -> None:
    probe = ROOT / "node" / "_house_probe.py"
    probe.write_text("def f(group):\n    return group.node.raft.log.applied\n")
    try:
        assert reaches_into_the_core(probe) == ["node._house_probe:2 .raft"]
    finally:
        probe.unlink()


# -- a real broker process -------------------------------------------------------------------
def test_a_broker_process_loads_neither_client_nor_chaos_nor_the_tooling(tmp_path: Path) -> None:
    """`liferaft node`, started as the container starts it, serves and then says what it loaded
    (python -X importtime logs every import as it happens, lazy ones included)."""
    from liferaft.cli.health import wait_serving
    from liferaft.launcher import free_port_block

    address = f"127.0.0.1:{free_port_block(1)}"
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    args = ["--node-id", "1", "--listen", address, "--peers", f"1@{address}"]
    args += ["--data-dir", str(tmp_path / "d"), "--tls-dir", str(tmp_path / "tls")]
    from liferaft.certs import create_certs  # here, so the broker must load them without it

    create_certs(tmp_path / "tls", [1])
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "liferaft", "node", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        result = wait_serving(address, timeout_s=2.0, wait_s=60.0)
        assert result.serving, result
        time.sleep(0.5)  # a moment of serving: whatever a running broker loads, it has
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    loaded = {
        line.rsplit("|", 1)[1].strip()
        for line in err.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "node.server" in loaded, "the node did not start as expected"
    broker = (
        "liferaft",
        "liferaft.__main__",
        "liferaft.cli",
        "liferaft.cli._common",
        "liferaft.cli.node",
    )
    unexpected = [
        m
        for m in sorted(loaded)
        if m.split(".")[0] in OURS
        and m.split(".")[0] not in ("node", "raft", "liferaft_proto")
        and m not in broker
    ]
    assert unexpected == []
