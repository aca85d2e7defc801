"""`python -m tests.sim --demo`: one five-node cluster through crashes and partitions, told as it
happens, with every safety property checked after every step. The world is the simulation's own
(tests/sim/world.py) with a fixed, watchable shape; ticks are paced so a person can follow."""

from __future__ import annotations

import time

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from raft import Role
from tests.sim.checker import Violation
from tests.sim.host import RaftParams
from tests.sim.network import Weather
from tests.sim.profile import Profile, SimOptions
from tests.sim.world import Event, World, liveness_bounds

CHAOS_TICKS = 400
TICK_SECONDS = 0.03
COMMIT_EVERY = 15  # ticks between two commit lines
SAFETY_EVERY = 100  # ticks between two safety lines

PROPERTIES = (
    "election safety",
    "leader append-only",
    "log matching",
    "leader completeness",
    "state machine safety",
    "vote safety",
    "commit durability",
    "commit monotonicity",
)

_STYLE = {
    "elect": ("★", "bold green"),
    "fault": ("✂", "bold red"),
    "heal": ("✚", "cyan"),
    "crash": ("✖", "red"),
    "restart": ("↻", "yellow"),
    "commit": ("✔", "green"),
    "snapshot": ("▣", "magenta"),
    "member": ("◎", "blue"),
    "transfer": ("⇄", "bright_green"),
    "live": ("♥", "bold green"),
    "safety": ("◆", "dim"),
}

DEMO_PROFILE = Profile(
    nodes=5,
    spares=2,
    raft=RaftParams(
        election_tick=10,
        heartbeat_tick=2,
        max_size_per_msg=4096,
        max_inflight_msgs=64,
    ),
    base_weather=Weather(drop=0.01, dup=0.01, max_delay=1),
    fault_rate=0.08,
    fault_ticks=30,
    crash_sync=0.003,
    crash_vote=0.05,
    depose_rate=0.1,
    crash_idle=0.01,
    restart_ticks=20,
    propose_rate=0.8,
    max_batch=32,
    transfer_rate=0.005,
    compact_rate=0.02,
    member_rate=0.012,
    defer_ready=0.0,
    min_batch=4,
)


class _Teller:
    """Turns the world's events into lines; batches commits so the stream stays readable."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.pending_from = 0
        self.pending_to = 0
        self.pending_who = ""
        self.elections = 0
        self.faults = 0

    def line(self, tick: int, kind: str, text: str) -> None:
        icon, style = _STYLE.get(kind, ("·", ""))
        t = Text(f" t={tick:4d}  ", style="dim")
        t.append(f"{icon} ", style=style)
        t.append(text, style=style if kind in ("elect", "fault", "live") else "")
        self.console.print(t)

    def event(self, ev: Event) -> None:
        if ev.kind == "commit":
            # "entries A..B committed (leader L, term T)": keep the range, print in batches.
            rng, _, who = ev.text.removeprefix("entries ").partition(" committed")
            lo, _, hi = rng.partition("..")
            if not self.pending_from:
                self.pending_from = int(lo)
            self.pending_to = int(hi)
            self.pending_who = f" {who.strip()}" if who.strip() else ""
            return
        self.flush(ev.tick)
        if ev.kind == "elect":
            self.elections += 1
            self.line(ev.tick, "elect", f"{ev.text.replace(' leads ', ' is leader of ')}")
        elif ev.kind == "phase":
            self.console.print(Rule(f"[bold cyan]{ev.text}"))
        else:
            if ev.kind == "fault":
                self.faults += 1
            self.line(ev.tick, ev.kind, ev.text)

    def flush(self, tick: int) -> None:
        if not self.pending_from:
            return
        n = self.pending_to - self.pending_from + 1
        self.line(
            tick,
            "commit",
            f"{n} entr{'y' if n == 1 else 'ies'} committed, up to index {self.pending_to}"
            f"{self.pending_who}",
        )
        self.pending_from = 0


def _status(world: World) -> Table:
    t = Table(title=f"cluster at tick {world.now}", title_style="bold", expand=False)
    for col in ("node", "role", "term", "commit", "applied", "log", "crashes"):
        t.add_column(col, justify="right" if col not in ("role", "log") else "left")
    members = world.conf.voters | world.conf.learners
    for sn in world.nodes.values():
        if sn.node is None:
            role = Text("removed" if sn.removed else "down", style="dim red")
            term = commit = applied = "-"
        else:
            r = sn.node.raft
            name = r.role.name.lower().replace("_", "-")
            if sn.id in world.conf.learners:
                name = "learner"
            style = {Role.LEADER: "bold green", Role.CANDIDATE: "yellow"}.get(r.role, "")
            role = Text(name, style=style)
            term, commit, applied = str(r.term), str(r.log.committed), str(r.log.applied)
        st = sn.storage
        log = f"{st.first_index()}..{st.last_index()}"
        ident = Text(str(sn.id), style="" if sn.id in members else "dim")
        t.add_row(ident, role, term, commit, applied, log, str(sn.crashes))
    return t


def _final(world: World) -> Table:
    """Narrow enough for an 80-column terminal."""
    t = Table(
        title="final state, per node",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    for col in (
        "node",
        "member",
        "role",
        "term",
        "commit",
        "digest",
        "disk log",
        "snaps",
        "crashes",
    ):
        t.add_column(
            col, justify="left" if col in ("member", "role", "digest", "disk log") else "right"
        )
    for sn in world.nodes.values():
        member = (
            "voter"
            if sn.id in world.conf.voters
            else "learner"
            if sn.id in world.conf.learners
            else "removed"
            if sn.removed
            else "-"
        )
        if sn.node is None:
            role, term, commit = "down", "-", "-"
        else:
            r = sn.node.raft
            role = r.role.name.lower().replace("_", "-")
            term, commit = str(r.term), str(r.log.committed)
        st = sn.storage
        first, last = st.first_index(), st.last_index()
        t.add_row(
            str(sn.id),
            member,
            role,
            term,
            commit,
            sn.machine.digest.hex()[:6],
            f"{first}..{last}" if last >= first else "empty",
            f"{sn.snapshots_taken}/{sn.snapshots_installed}",
            str(sn.crashes),
        )
    t.caption = "digest: of everything the node applied; snaps: taken/installed"
    return t


def _n(count: int, one: str, many: str = "") -> str:
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def run_demo(seed: int = 7) -> int:
    console = Console(highlight=False)
    teller = _Teller(console)
    world = World(seed, SimOptions(nodes=5, ticks=CHAOS_TICKS), teller.event, profile=DEMO_PROFILE)
    console.print(
        Panel.fit(
            Text.assemble(
                ("liferaft", "bold"),
                " · deterministic Raft simulation · seed ",
                (str(seed), "bold"),
                " · five nodes\n",
                (
                    "crashes at any point of the host loop, partitions, lossy links, snapshots and "
                    "membership changes;\nevery safety property checked after every step",
                    "dim",
                ),
            ),
            border_style="cyan",
        )
    )
    started = time.perf_counter()
    live = Live(_status(world), console=console, refresh_per_second=8, transient=True)

    def on_tick(w: World) -> None:
        if w.now % COMMIT_EVERY == 0:
            teller.flush(w.now)
        if w.now % SAFETY_EVERY == 0:
            teller.line(
                w.now,
                "safety",
                f"safety holds after {w.steps:,} steps ({w.checker.committed:,} entries committed)",
            )
        live.update(_status(w))
        time.sleep(TICK_SECONDS)

    world.on_tick = on_tick
    failure: Violation | None = None
    with live:
        try:
            world.run_chaos()
            world.run_calm()
        except Violation as e:
            failure = e
    teller.flush(world.now)
    world.finish_stats()
    console.print(_final(world))
    s = world.stats
    if failure is not None:
        console.print(Panel(str(failure), title="safety violation", border_style="bold red"))
        console.print(f"replay: python -m tests.sim --demo --seed {seed}")
        return 1
    leader_bound, commit_bound = liveness_bounds(world.profile.raft)
    summary = Group(
        Text.assemble(
            ("All safety properties held", "bold green"),
            f" over {s.steps:,} steps and {s.ticks} ticks ({time.perf_counter() - started:.1f} s):",
        ),
        Text("  " + ", ".join(PROPERTIES) + ".", style="green"),
        Text(
            f"{_n(s.elections, 'election')}, {_n(s.committed, 'entry', 'entries')} committed "
            f"({_n(s.values_committed, 'client value')}), {_n(s.faults, 'fault')}, "
            f"{_n(s.crashes, 'crash', 'crashes')}, {_n(s.snapshots_installed, 'snapshot')} "
            f"installed, {_n(s.conf_changes, 'membership change')}."
        ),
        Text(
            f"Calm phase: a leader after {_n(s.leader_ticks, 'tick')} (bound {leader_bound}), a "
            f"fresh proposal committed on every member {_n(s.commit_ticks, 'tick')} later "
            f"(bound {commit_bound})."
        ),
    )
    console.print(Panel(summary, border_style="green"))
    return 0
