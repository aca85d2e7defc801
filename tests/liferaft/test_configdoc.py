"""docs/configuration.md lists every key of `liferaft node --config`, each with its meaning."""

from __future__ import annotations

import dataclasses

from liferaft.cli import _configdoc
from node.config import NodeConfig


def test_the_doc_holds_the_table_made_from_nodeconfig() -> None:
    doc = _configdoc.DOC.read_text()
    assert _configdoc.render(doc) == doc, "run: python -m liferaft.cli._configdoc"


def test_every_field_is_a_row_with_a_meaning() -> None:
    table = _configdoc.config_table()
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()[2:]}
    for f in dataclasses.fields(NodeConfig):
        assert f.name in rows, f"{f.name} is missing from the table"
        meaning = rows[f.name].rsplit("|", 2)[1].strip()
        assert meaning, f"NodeConfig.{f.name} has no docstring to say what it means"


def test_field_docs_reads_the_docstring_under_each_field() -> None:
    source = 'class NodeConfig:\n    a: int\n    """A."""\n    b: int = 2\n    c: str = ""\n    """C,\n    two lines."""\n'
    assert _configdoc.field_docs(source) == {"a": "A.", "c": "C,\ntwo lines."}
