"""`liferaft produce`: each line of stdin becomes one record."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from liferaft.cli._client import (
    BootstrapOpt,
    JsonOpt,
    _bootstrap,
    _client_errors,
    _print_json,
)

app = typer.Typer(add_completion=False)


@app.command("produce")
def produce(
    topic: Annotated[str, typer.Argument(help="The topic to write to.")],
    acks: Annotated[
        str, typer.Option("--acks", help="all: committed to the ISR; 1: on the leader; 0: sent.")
    ] = "all",
    key: Annotated[str | None, typer.Option("--key", "-k", help="A key for every record.")] = None,
    partition: Annotated[
        int | None, typer.Option("--partition", "-p", help="Write to this partition.")
    ] = None,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send each line of stdin as one record; print where each landed."""
    from client import SyncProducer

    with _client_errors(), SyncProducer(_bootstrap(bootstrap), acks=acks) as producer:
        for line in sys.stdin:
            meta = producer.send_and_wait(topic, line.rstrip("\r\n"), key=key, partition=partition)
            if json_out:
                _print_json(
                    {
                        "topic": meta.topic,
                        "partition": meta.partition,
                        "offset": meta.offset,
                        "timestamp_ms": meta.timestamp_ms,
                    }
                )
            else:
                offset = str(meta.offset) if meta.offset >= 0 else "unknown (acks=0)"
                typer.echo(f"{meta.topic} partition {meta.partition} offset {offset}")
