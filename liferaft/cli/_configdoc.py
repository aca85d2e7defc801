"""The table of `liferaft node --config` keys in docs/configuration.md, made from NodeConfig.

Every field of node.config.NodeConfig is a TOML key (a dash may stand for an underscore); its
type and default come from the dataclass, its meaning from the docstring under the field. The
table in the doc sits between two markers and is rewritten by

    python -m liferaft.cli._configdoc

tests/liferaft/test_configdoc.py fails when the doc's table is not what this module makes, so
a new field cannot go undocumented.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import itertools
import json
from pathlib import Path

BEGIN = "<!-- config-table:begin (python -m liferaft.cli._configdoc) -->"
END = "<!-- config-table:end -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def field_docs(source: str, class_name: str = "NodeConfig") -> dict[str, str]:
    """Field name -> the docstring written under it in the class body."""
    tree = ast.parse(source)
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    docs: dict[str, str] = {}
    body = cls.body
    for here, after in itertools.pairwise(body):
        if (
            isinstance(here, ast.AnnAssign)
            and isinstance(here.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[here.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _default(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    if isinstance(f.default, str):
        return f"`{json.dumps(f.default)}`"
    if f.default is not dataclasses.MISSING:
        return f"`{f.default!r}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{f.default_factory()!r}`"
    return "required"


def config_table() -> str:
    """The markdown table: key, type, default, meaning; one row per NodeConfig field."""
    from node import config

    spec = importlib.util.find_spec("node.config")
    assert spec is not None and spec.origin is not None
    docs = field_docs(Path(spec.origin).read_text())
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(config.NodeConfig):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        meaning = " ".join(docs.get(f.name, "").split()).replace("|", "\\|")
        kind = kind.replace("|", "\\|")  # `Path | None`: a pipe would end the cell
        rows.append(f"| `{f.name}` | `{kind}` | {_default(f)} | {meaning} |")
    return "\n".join(rows)


def render(doc: str) -> str:
    """The doc with the table between the markers made anew."""
    head, sep, rest = doc.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"{DOC} lacks the markers {BEGIN!r} ... {END!r}")
    return f"{head}{BEGIN}\n{config_table()}\n{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text()))
    print(f"wrote {DOC}")
