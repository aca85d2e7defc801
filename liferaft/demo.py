"""`liferaft demo`: the mission in one screen.

Start a local three-node cluster, create a topic replicated three ways, produce with acks=all,
kill -9 the leader of a partition in the middle of it, keep producing (the client fails over by
itself), read everything back and check that every acknowledged record is there, bring the dead
node back and watch it rejoin the ISR — showing the cluster metadata before and after.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from client import AdminClient, Consumer, LiferaftError, Producer, TopicPartition
from liferaft.launcher import DevCluster, DevClusterError, free_port_block

TOPIC = "demo-orders"


def metadata_table(title: str, desc: object, killed: int | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("partition", "leader", "epoch", "replicas", "in-sync replicas", "high watermark"):
        table.add_column(col)
    for p in desc.partitions:  # type: ignore[attr-defined]

        def fmt(ids: tuple[int, ...]) -> str:
            return ", ".join(f"[red]{i}✝[/]" if i == killed else str(i) for i in ids)

        table.add_row(
            str(p.partition),
            f"[bold]{p.leader}[/]" if p.leader else "[red]none[/]",
            str(p.leader_epoch),
            fmt(p.replicas),
            fmt(p.isr),
            str(p.high_watermark),
        )
    return table


async def _describe(bootstrap: str) -> object:
    async with AdminClient(bootstrap) as admin:
        return (await admin.describe_topics([TOPIC]))[TOPIC]


async def _produce(
    producer: Producer,
    start: int,
    count: int,
    acked: dict[bytes, tuple[int, int]],
    console: Console,
) -> float | None:
    """Send `count` keyed records one by one (acks=all); returns the longest wait for one ack."""
    worst = 0.0
    for i in range(start, start + count):
        value = b"order-%05d" % i
        t0 = time.monotonic()
        md = await producer.send_and_wait(TOPIC, value, key=b"customer-%d" % (i % 10))
        worst = max(worst, time.monotonic() - t0)
        acked[value] = (md.partition, md.offset)
    return worst


async def _read_back(bootstrap: str, partitions: int) -> dict[bytes, list[tuple[int, int]]]:
    seen: dict[bytes, list[tuple[int, int]]] = {}
    async with AdminClient(bootstrap) as admin:
        ends = await admin.list_offsets({(TOPIC, p): "latest" for p in range(partitions)})
    async with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        remaining = {tp: ends[tp].offset for tp in tps}
        deadline = time.monotonic() + 60
        while True:
            behind = [tp for tp, end in remaining.items() if await consumer.position(tp) < end]
            if not behind:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("reading back took over 60 s")
            for tp, recs in (await consumer.getmany(timeout_ms=500)).items():
                for r in recs:
                    if r.value is not None:
                        seen.setdefault(r.value, []).append((tp.partition, r.offset))
    return seen


async def run_demo(console: Console, cluster: DevCluster, records: int) -> bool:
    bootstrap = cluster.bootstrap
    async with AdminClient(bootstrap) as admin:
        await admin.create_topic(TOPIC, 3, 3)
    console.print(
        f"\n[bold]2.[/] created topic [cyan]{TOPIC}[/]: 3 partitions, replication factor 3"
    )
    console.print(metadata_table("metadata before", await _describe(bootstrap)))

    acked: dict[bytes, tuple[int, int]] = {}
    async with Producer(bootstrap, acks="all") as producer:
        console.print(f"\n[bold]3.[/] producing {records} records with acks=all ...")
        await _produce(producer, 0, records, acked, console)
        console.print(f"   {len(acked)} acknowledged")

        victim = (await _describe(bootstrap)).partitions[0].leader  # type: ignore[attr-defined]
        console.print(
            f"\n[bold]4.[/] [red]kill -9[/] node {victim}, the leader of partition 0, and keep producing"
        )
        killed_at = time.monotonic()
        cluster.kill(victim)
        worst = await _produce(producer, records, records, acked, console)
        console.print(
            f"   {len(acked)} acknowledged in all; the longest wait for one ack after the kill was "
            f"{worst:.2f} s (election and client failover included; {time.monotonic() - killed_at:.1f} s "
            "for the whole second half)"
        )
    console.print(
        metadata_table(
            f"metadata after the kill of node {victim}", await _describe(bootstrap), victim
        )
    )

    console.print("\n[bold]5.[/] reading every partition back from the start ...")
    seen = await _read_back(bootstrap, 3)
    lost = [v for v in acked if v not in seen]
    moved = [v for v, where in acked.items() if v in seen and where not in seen[v]]
    dups = [v for v in acked if len(seen.get(v, [])) > 1]
    ok = not lost and not moved
    colour = "green" if ok else "red"
    console.print(
        f"   [{colour}]{len(acked)} acknowledged, {sum(len(w) for w in seen.values())} read back, "
        f"{len(lost)} lost, {len(moved)} not at their acknowledged offset[/]"
        + (f", {len(dups)} written twice by retries (at-least-once)" if dups else "")
    )

    console.print(f"\n[bold]6.[/] restarting node {victim}; it catches up from the leaders ...")
    cluster.start_node(victim)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            desc = await _describe(bootstrap)
            if all(victim in p.isr for p in desc.partitions):  # type: ignore[attr-defined]
                break
        except LiferaftError:
            pass
        await asyncio.sleep(0.3)
    console.print(
        metadata_table(f"metadata after node {victim} rejoined", await _describe(bootstrap))
    )
    return ok


def demo(data_dir: Path | None, base_port: int | None, records: int, keep: bool) -> int:
    console = Console()
    own_dir = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="liferaft-demo-")) if data_dir is None else data_dir
    try:
        cluster = DevCluster.create(root, 3, base_port or free_port_block(3))
    except DevClusterError as e:
        console.print(f"[red]error:[/] {e}")
        return 1
    console.print(
        f"[bold]1.[/] starting three nodes on {cluster.bootstrap} (data and logs in {root})"
    )
    ok = False
    try:
        cluster.start()
        with console.status("waiting for the nodes to elect a controller ..."):
            cluster.wait_healthy(60)
        ok = asyncio.run(run_demo(console, cluster, records))
    except (DevClusterError, LiferaftError, TimeoutError) as e:
        console.print(f"[red]error:[/] {e}")
    finally:
        if keep:
            console.print(
                f"\ncluster left running: [bold]LIFERAFT_BOOTSTRAP={cluster.bootstrap}[/] "
                f"(`liferaft dev down --data-dir {root}` stops it)"
            )
        else:
            cluster.stop()
            if own_dir:
                shutil.rmtree(root, ignore_errors=True)
            console.print("\ncluster stopped")
    if ok:
        console.print("[bold green]no acknowledged record was lost[/]")
    return 0 if ok else 1
