"""`liferaft produce`: each line of stdin becomes one record, many in flight at once.

The lines go through the batching producer (client.Producer): send() queues a record and
returns at once, batches fill per partition and several are in the air per partition, so a
pipe of a hundred thousand lines is a few hundred requests, not a hundred thousand round trips.
The command reads stdin in blocks on a worker thread and runs the producer on its own event
loop (no per-record hop between threads).

What a line holds: its value; with --key-separator SEP, a key before the first SEP; with
--format, any of key, value, headers and partition (liferaft/cli/_formats.py). -H adds a header
to every record; --tombstone sends an empty value as a tombstone (a null value: the delete
marker of a compacted topic) instead of an empty string.

Output: nothing per record unless asked (-v: a line per record, --json: a JSON object per
record, both in input order); a summary on stderr at the end, and a progress line on stderr
while it runs when stderr is a terminal. Exit 0 when every record was acknowledged, 1 when any
failed (the first few failures are printed with their line numbers), 2 for bad usage.

Bounded time: --timeout (default 30 s) is the longest one record may take, retries included
(the producer's delivery timeout), and the longest the command waits for the cluster to answer
at all; past it the record fails with the last error the cluster gave (which replicas are
missing, which node is unreachable).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from liferaft.cli._client import (
    BootstrapOpt,
    JsonOpt,
    _bootstrap,
    _client_errors,
    _fail,
    security_settings,
)

app = typer.Typer(add_completion=False)

READ_BLOCK = 1 << 16
SHOW_FAILURES = 5
PROGRESS_EVERY_S = 0.25
_RECORD_ERRORS: tuple[type[Exception], ...] = (ValueError,)
"""A record's own faults (set when the client is imported): counted, and the rest go on."""


@app.command("produce")
def produce(
    topic: Annotated[str, typer.Argument(help="The topic to write to.")],
    acks: Annotated[
        str, typer.Option("--acks", help="all: committed to the ISR; 1: on the leader; 0: sent.")
    ] = "all",
    key: Annotated[str | None, typer.Option("--key", "-k", help="A key for every record.")] = None,
    key_separator: Annotated[
        str | None,
        typer.Option(
            "--key-separator",
            "-K",
            help="Split each line at the first SEP: key SEP value (kcat's -K). \\t is a tab.",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="How a line is laid out: %k key, %v value, %h headers (a=1,b=2), %p partition, "
            "with separators between, e.g. '%k\\t%h\\t%v'.",
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="A header KEY=VALUE on every record (repeatable)."),
    ] = None,
    tombstone: Annotated[
        bool,
        typer.Option(
            "--tombstone", "-Z", help="Send an empty value as a tombstone (null), not as ''."
        ),
    ] = False,
    partition: Annotated[
        int | None, typer.Option("--partition", "-p", help="Write to this partition.")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.5,
            help="Seconds a record may take, retries included; and to find the cluster.",
        ),
    ] = 30.0,
    linger_ms: Annotated[
        int, typer.Option("--linger-ms", min=0, help="How long a batch waits to fill.")
    ] = 5,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print where each record landed.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress line and no summary.")
    ] = False,
    bootstrap: BootstrapOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send each line of stdin as one record (pipelined); a summary at the end."""
    import asyncio

    from liferaft.cli._formats import input_parser, parse_header_option, unescape

    if key_separator is not None and fmt is not None:
        raise _fail("give --key-separator or --format, not both", 2)
    if key is not None and (key_separator is not None or (fmt is not None and "%k" in fmt)):
        raise _fail("--key gives every record one key; the line gives it too: choose one", 2)
    if key_separator == "":
        raise _fail("--key-separator must not be empty", 2)
    if partition is not None and partition < 0:
        raise _fail("--partition must be >= 0", 2)
    try:
        layout = fmt if fmt is not None else "%v"
        if key_separator is not None:
            layout = "%k" + unescape(key_separator).replace("%", "%%") + "%v"
        parse = input_parser(layout)
        headers = [parse_header_option(h) for h in header or []]
    except ValueError as e:
        raise _fail(str(e), 2) from None
    boot = _bootstrap(bootstrap)
    job = _Job(topic, parse, key, headers, tombstone, partition, verbose, json_out, quiet)
    with _client_errors():
        asyncio.run(job.run(boot=boot, acks=acks, timeout_s=timeout, linger_ms=linger_ms))
    if job.failed:
        raise typer.Exit(1)


class _Job:
    """One run of the command: reads, sends, counts, reports."""

    def __init__(
        self,
        topic: str,
        parse: Any,
        key: str | None,
        headers: list[tuple[str, bytes]],
        tombstone: bool,
        partition: int | None,
        verbose: bool,
        json_out: bool,
        quiet: bool,
    ) -> None:
        self.topic = topic
        self.parse = parse
        self.key = key.encode("utf-8") if key is not None else None
        self.headers = headers
        self.tombstone = tombstone
        self.partition = partition
        self.per_record = verbose or json_out
        self.json_out = json_out
        self.quiet = quiet
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.failures: list[str] = []
        self.partitions: dict[int, int] = {}
        self.pending: list[tuple[int, Any]] = []
        """(line number, future) of every record sent, in input order."""
        self.settled = 0
        """pending[:settled] are done and counted (no callback per record: they cost)."""

    async def run(self, *, boot: str, acks: str, timeout_s: float, linger_ms: int) -> None:
        import asyncio
        import time

        from client import MessageTooLargeError, Producer, UnknownTopicOrPartitionError

        global _RECORD_ERRORS
        _RECORD_ERRORS = (MessageTooLargeError, UnknownTopicOrPartitionError, ValueError)

        timeout_ms = int(timeout_s * 1000)
        producer = Producer(
            boot,
            acks=acks,
            linger_ms=linger_ms,
            delivery_timeout_ms=timeout_ms,
            request_timeout_ms=min(timeout_ms, 10_000),
            max_block_ms=timeout_ms,
            **security_settings(),
        )
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        progress: asyncio.Task[None] | None = None
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await producer.start()
                    count = len(await producer.partitions_for(self.topic))
            except TimeoutError:
                raise _fail(
                    f"no node of the cluster ({boot}) answered within {timeout_s:g} s "
                    "(--timeout): is it up?"
                ) from None
            if self.partition is not None and self.partition >= count:
                raise _fail(
                    f"topic {self.topic!r} has partitions 0..{count - 1}, not {self.partition}", 2
                )
            if not self.quiet and sys.stderr.isatty():
                progress = asyncio.create_task(self._progress(started))
            stdin: Any = sys.stdin.buffer
            rest = b""
            lineno = 0
            while True:
                block = await loop.run_in_executor(None, stdin.read1, READ_BLOCK)
                if not block:
                    lines = [rest] if rest else []
                else:
                    *lines, rest = (rest + block).split(b"\n")
                for line in lines:
                    lineno += 1
                    await self._send(producer, line, lineno)
                if self.per_record:
                    self._settle(print_them=True)
                if not block:
                    break
            await producer.flush()
            if self.pending:
                await asyncio.wait([f for _, f in self.pending[self.settled :]])
            self._settle(print_them=self.per_record)
        finally:
            if progress is not None:
                progress.cancel()
            await producer.close()
        if not self.quiet:
            self._summary(time.monotonic() - started, acks)

    async def _send(self, producer: Any, line: bytes, lineno: int) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            parsed = self.parse(line)
        except ValueError as e:
            self._failed(lineno, f"does not fit the format: {e}; not sent")
            return
        value: bytes | None = parsed.value
        if self.tombstone and not value:
            value = None
        headers = [*self.headers, *parsed.headers]
        partition = parsed.partition if parsed.partition is not None else self.partition
        try:
            fut = await producer.send(
                self.topic,
                value,
                key=parsed.key if parsed.key is not None else self.key,
                partition=partition,
                headers=headers or None,
            )
        except _RECORD_ERRORS as e:
            # This record's own fault (too big, a partition the topic lacks): the rest go on.
            self._failed(lineno, f"{getattr(e, 'code_name', 'INVALID')}: {_message(e)}; not sent")
            return
        self.sent += 1
        self.pending.append((lineno, fut))

    def _settle(self, *, print_them: bool) -> None:
        """Count (and print, if asked) the records done so far, in input order."""
        pending = self.pending
        i = self.settled
        while i < len(pending) and pending[i][1].done():
            lineno, fut = pending[i]
            if fut.cancelled():
                self._failed(lineno, "cancelled")
            elif fut.exception() is not None:
                e = fut.exception()
                self._failed(lineno, f"{getattr(e, 'code_name', type(e).__name__)}: {_message(e)}")
            else:
                self.acked += 1
                meta = fut.result()
                self.partitions[meta.partition] = self.partitions.get(meta.partition, 0) + 1
                if print_them:
                    self._print(meta)
            i += 1
        self.settled = i

    def _failed(self, lineno: int, why: str) -> None:
        self.failed += 1
        if len(self.failures) < SHOW_FAILURES:
            self.failures.append(f"line {lineno}: {why}")

    def _print(self, meta: Any) -> None:
        import json

        if self.json_out:
            doc = {
                "topic": meta.topic,
                "partition": meta.partition,
                "offset": meta.offset,
                "timestamp_ms": meta.timestamp_ms,
            }
            typer.echo(json.dumps(doc))
        else:
            offset = str(meta.offset) if meta.offset >= 0 else "unknown (acks=0)"
            typer.echo(f"{meta.topic} partition {meta.partition} offset {offset}")

    async def _progress(self, started: float) -> None:
        import asyncio
        import time

        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self._settle(print_them=self.per_record)
            rate = self.acked / max(time.monotonic() - started, 1e-6)
            sys.stderr.write(
                f"\r{self.sent:,} sent, {self.acked:,} acknowledged, {self.failed:,} failed, "
                f"{rate:,.0f}/s \x1b[K"
            )
            sys.stderr.flush()

    def _summary(self, elapsed: float, acks: str) -> None:
        from liferaft.cli._client import plural

        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
        spread = ", ".join(f"{p}: {n:,}" for p, n in sorted(self.partitions.items()))
        rate = self.acked / elapsed if elapsed > 0 else 0.0
        line = (
            f"produced {plural(self.acked, 'record')} to {self.topic} in {elapsed:.2f} s "
            f"({rate:,.0f}/s, acks={acks})" + (f"; by partition {spread}" if spread else "")
        )
        if self.failed:
            line += f"; {plural(self.failed, 'record')} FAILED"
        print(line, file=sys.stderr)
        for f in self.failures:
            print(f"  {f}", file=sys.stderr)
        if self.failed > len(self.failures):
            print(f"  ... and {self.failed - len(self.failures):,} more", file=sys.stderr)


def _message(e: BaseException) -> str:
    """An error's message, with what kept failing when the client gave up (DeliveryTimeout)."""
    msg = getattr(e, "message", None) or str(e)
    last = getattr(e, "last_error", None)
    if last is not None and getattr(last, "message", str(last)) not in msg:
        msg += f" (last error: {getattr(last, 'code_name', '')}: {getattr(last, 'message', last)})"
    return msg
