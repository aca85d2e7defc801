"""`liferaft consume`: print records as they arrive."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from liferaft.cli._client import (
    BootstrapOpt,
    JsonOpt,
    _bootstrap,
    _client_errors,
    _fail,
    _record_json,
    _text,
)

app = typer.Typer(add_completion=False)


@app.command("consume")
def consume(
    topic: Annotated[str, typer.Argument(help="The topic to read.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the log start, not the end.")
    ] = False,
    offset: Annotated[
        int | None, typer.Option("--offset", help="Start at this offset (in every partition read).")
    ] = None,
    partition: Annotated[
        int | None, typer.Option("--partition", "-p", help="Read only this partition.")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Stop after this many records.")
    ] = None,
    idle_timeout_ms: Annotated[
        int | None,
        typer.Option("--timeout-ms", help="Stop when no record arrives for this long."),
    ] = None,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print records as they arrive: each value on its own line (--json: whole records)."""
    from client import SyncConsumer, TopicPartition

    if from_beginning and offset is not None:
        raise _fail("give --from-beginning or --offset, not both", 2)
    if offset is not None and offset < 0:
        raise _fail("--offset must be >= 0", 2)
    if count is not None and count < 1:
        raise _fail("--count must be >= 1", 2)
    reset = "earliest" if from_beginning else "latest"
    with _client_errors(), SyncConsumer(_bootstrap(bootstrap), auto_offset_reset=reset) as consumer:
        partitions = [partition] if partition is not None else consumer.partitions_for(topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            if offset is not None:
                consumer.seek(tp, offset)
            else:
                consumer.position(tp)  # fix the starting point now, before anything is produced
        seen = 0
        wait_ms = idle_timeout_ms if idle_timeout_ms is not None else 1000
        while count is None or seen < count:
            limit = count - seen if count is not None else None
            got = consumer.getmany(timeout_ms=wait_ms, max_records=limit)
            if not got and idle_timeout_ms is not None:
                break
            for tp_records in got.values():
                for r in tp_records:
                    typer.echo(json.dumps(_record_json(r)) if json_out else _text(r.value))
                    seen += 1
