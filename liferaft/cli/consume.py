"""`liferaft consume`: print records as they arrive, alone or as a member of a consumer group.

Output is binary-safe: by default each record's value, as its raw bytes, then a newline; with
--format, kcat's tokens (%t %p %o %T %k %v %h %K %S, liferaft/cli/_formats.py); with --json,
one object per record, keys, values and header values as text when they are UTF-8 and as
{"base64": ...} when not, and a tombstone as "value": null with "tombstone": true. In text a
null key or value is printed as the --null text (empty by default), never as a word a value
could also be.

With --group the command joins the group (its partitions are shared with the group's other
members, and move when one stops), starts where the group committed (else where --from-beginning
or the end says), and commits what it printed as it goes and when it stops. Without --group it
reads every partition (or --partition) and commits nothing.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from liferaft.cli._client import (
    BootstrapOpt,
    JsonOpt,
    _bootstrap,
    _client_errors,
    _fail,
    _record_json,
    security_settings,
)

app = typer.Typer(add_completion=False)


@app.command("consume")
def consume(
    topic: Annotated[str, typer.Argument(help="The topic to read.")],
    group: Annotated[
        str | None,
        typer.Option("--group", "-g", help="Join this consumer group; commit what was printed."),
    ] = None,
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
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="kcat's -f: %t topic, %p partition, %o offset, %T timestamp, %k key, %v value, "
            "%h headers, %K/%S key/value length; \\n \\t. Default: '%v\\n'.",
        ),
    ] = None,
    null: Annotated[
        str, typer.Option("--null", help="How a null key or value (a tombstone) is printed.")
    ] = "",
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print records as they arrive: each value on its own line, raw bytes (or --format, --json)."""
    import json

    from liferaft.cli._formats import output_formatter

    if from_beginning and offset is not None:
        raise _fail("give --from-beginning or --offset, not both", 2)
    if offset is not None and offset < 0:
        raise _fail("--offset must be >= 0", 2)
    if count is not None and count < 1:
        raise _fail("--count must be >= 1", 2)
    if group is not None and (partition is not None or offset is not None):
        raise _fail(
            "--group reads the partitions the group gives it, from the group's offsets: "
            "--partition and --offset do not go with it (see `liferaft group seek`)",
            2,
        )
    if fmt is not None and json_out:
        raise _fail("give --format or --json, not both", 2)
    try:
        render = output_formatter(fmt if fmt is not None else "%v\\n", null)
    except ValueError as e:
        raise _fail(str(e), 2) from None
    out = sys.stdout.buffer

    def emit(records: list) -> None:  # type: ignore[type-arg]
        if json_out:
            out.write(
                b"".join(json.dumps(_record_json(r)).encode("utf-8") + b"\n" for r in records)
            )
        else:
            out.write(b"".join(render(r) for r in records))
        out.flush()

    with _client_errors():
        _consume(
            _bootstrap(bootstrap),
            topic,
            group,
            "earliest" if from_beginning else "latest",
            offset,
            partition,
            count,
            idle_timeout_ms,
            emit,
        )


def _consume(
    boot: str,
    topic: str,
    group: str | None,
    reset: str,
    offset: int | None,
    partition: int | None,
    count: int | None,
    idle_timeout_ms: int | None,
    emit: object,
) -> None:
    from client import SyncConsumer, TopicPartition

    settings: dict[str, object] = {"auto_offset_reset": reset, **security_settings()}
    if group is not None:
        settings.update(group_id=group, client_id="liferaft-cli")
    with SyncConsumer(boot, **settings) as consumer:
        if group is not None:
            consumer.partitions_for(topic)  # an unknown topic fails here, clearly
            consumer.subscribe([topic])
            consumer.wait_for_assignment(timeout_ms=30_000)
        else:
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
                emit(tp_records)  # type: ignore[operator]
                seen += len(tp_records)
