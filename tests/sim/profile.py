"""The shape of a world: what the command line fixes (SimOptions) and what each seed draws
(Profile). Drawing the shape per seed is swarm testing: every seed turns each kind of fault and
each core option up, down or off, so rare combinations get their own seeds instead of drowning
in an average mix."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from tests.sim.host import HostPolicy, RaftParams
from tests.sim.network import Weather

ONE_VOTER = 1
ONE_VOTER_ODDS = 0.15
"""Share of seeds whose group starts with one voter and learners (Profile.voters)."""


@dataclass(slots=True, frozen=True)
class SimOptions:
    """What the command line may fix; everything else the seed chooses."""

    nodes: int | None = None
    """Cluster size; None: 3 to 7, drawn from the seed."""
    ticks: int = 300
    """Length of the chaos phase in ticks."""
    steps: int | None = None
    """Optional cap on the chaos phase in steps."""
    faults: bool = True
    """False: no faults at all (the benchmark)."""
    leader_removes_itself: bool = False
    """The operator may ask a leader to remove itself, as it did before seed 907 (tests/sim/
    actors.py); seed 524's world needs it to replay."""


@dataclass(slots=True, frozen=True)
class Profile:
    """The shape of one world, drawn from its seed: how big, and how nasty."""

    nodes: int
    spares: int  # node ids kept for membership changes (never reused)
    raft: RaftParams
    base_weather: Weather
    fault_rate: float  # per tick: probability that a new fault starts
    fault_ticks: int  # a fault lasts 1 to this many ticks
    crash_sync: float  # per Ready that needs an fsync: probability of a crash in its loop
    crash_vote: float  # the same, for a Ready that changes the durable term or vote
    depose_rate: float  # probability that a new leader is crashed or cut off soon after
    crash_idle: float  # per tick: probability that some node crashes between steps
    restart_ticks: int  # a crashed node is back within this many ticks
    propose_rate: float  # per tick: probability of a client batch
    max_batch: int
    transfer_rate: float
    compact_rate: float  # per node per tick
    member_rate: float
    defer_ready: float  # probability a node steps more input before its next Ready cycle
    one_ready: float = 0.0  # probability a host loop stops after one Ready (lazy apply)
    campaign_rate: float = 0.0  # per tick: probability an operator makes a node campaign now
    min_batch: int = 1
    proposals_per_tick: int = 1  # client batches tried per tick (each with propose_rate)
    host: HostPolicy = field(default_factory=HostPolicy)
    propose_syncing: float = 0.0  # probability a leader takes a proposal while it fsyncs
    wipe_rate: float = 0.0
    """Per tick: probability that a voter's disk is wiped and it restarts as a new incarnation
    (the operator then replaces it: tests/sim/actors.py replace_wiped)."""
    voters: int = 0
    """How many of the nodes start as voters, the rest as learners (0: all). A single voter
    with learners is a broker partition of replication factor 1 whose replica is being moved:
    the voter elects itself, and only the durability of its own vote keeps it from sending
    appends of a term a crash could make it reuse (issue 11)."""

    def describe(self) -> str:
        """One line for a person replaying the seed."""
        r = self.raft
        w = self.base_weather
        return (
            f"{self.nodes} nodes; election {r.election_tick} ticks, heartbeat "
            f"{r.heartbeat_tick}; {r.max_size_per_msg} bytes/message, {r.max_inflight_msgs} in "
            f"flight; PreVote {'on' if r.pre_vote else 'off'}, CheckQuorum "
            f"{'on' if r.check_quorum else 'off'}; network {w.drop:.0%} loss, {w.dup:.0%} "
            f"duplicates, delays <= {w.max_delay}; faults {self.fault_rate}/tick; crashes "
            f"{self.crash_sync}/fsync ({self.crash_vote} when voting); deposing new leaders "
            f"{self.depose_rate:.0%}; host: lazy commit {'on' if self.host.lazy_commit else 'off'}, "
            f"quiesce after {self.host.quiesce_after or 'never'}, writes in flight "
            f"{'yes' if self.host.pipeline else 'no'}"
            + (f"; {self.voters} voter(s), the rest learners" if self.voters else "")
            + (f"; disks wiped {self.wipe_rate}/tick" if self.wipe_rate else "")
        )

    @classmethod
    def draw(cls, rng: random.Random, opts: SimOptions) -> Profile:
        nodes = opts.nodes if opts.nodes is not None else rng.randint(3, 7)
        et = rng.choice([6, 8, 10])
        raft = RaftParams(
            election_tick=et,
            heartbeat_tick=rng.choice([1, 2, 2, 3]),
            # Small messages make entries travel one at a time, which is what exposes commit
            # rules (Figure 8): the old-term entry arrives without the new leader's no-op.
            # A broker's entries are record batches close to the message size limit, so "one
            # entry per message" is the common case in production, and weighted so here.
            max_size_per_msg=rng.choice([1, 1, 100, 1000, 1 << 20]),
            max_inflight_msgs=rng.choice([1, 2, 8, 256]),
            max_committed_size_per_ready=rng.choice([1, 500, 16 << 20]),
            check_quorum=rng.random() < 0.8,
            pre_vote=rng.random() < 0.8,
        )
        if not opts.faults:
            return cls(
                nodes=nodes,
                spares=0,
                raft=raft,
                base_weather=Weather(),
                fault_rate=0.0,
                fault_ticks=1,
                crash_sync=0.0,
                crash_vote=0.0,
                depose_rate=0.0,
                crash_idle=0.0,
                restart_ticks=1,
                propose_rate=rng.uniform(0.2, 0.9),
                max_batch=rng.choice([1, 4, 16]),
                transfer_rate=0.0,
                compact_rate=0.02,
                member_rate=0.0,
                defer_ready=0.0,
            )
        profile = cls(
            nodes=nodes,
            spares=3,
            raft=raft,
            base_weather=Weather(
                drop=rng.choice([0.0, 0.0, 0.01, 0.05]),
                dup=rng.choice([0.0, 0.01, 0.05]),
                max_delay=rng.choice([0, 1, 2, 3]),
            ),
            fault_rate=rng.choice([0.02, 0.05, 0.1, 0.2]),
            fault_ticks=rng.choice([2, 3, 5]) * et,
            crash_sync=rng.choice([0.005, 0.02, 0.05]),
            # The nemesis aims where Raft is delicate (Jepsen's targeted faults): a node that
            # is casting a vote or moving to a new term, and a leader that was just elected and
            # has replicated only part of its log. Split votes and short-lived leaders with
            # partial logs are what the election and commit rules exist for (Figure 8).
            crash_vote=rng.choice([0.0, 0.05, 0.2]),
            depose_rate=rng.choice([0.0, 0.3, 0.6, 0.9]),
            crash_idle=rng.choice([0.0, 0.01, 0.03]),
            restart_ticks=rng.choice([1, 2, 4]) * et,
            propose_rate=rng.uniform(0.1, 0.8),
            max_batch=rng.choice([1, 3, 8]),
            transfer_rate=rng.choice([0.0, 0.005, 0.02]),
            compact_rate=rng.choice([0.0, 0.01, 0.05]),
            member_rate=rng.choice([0.0, 0.01, 0.03]),
            defer_ready=rng.choice([0.0, 0.0, 0.3]),
            one_ready=rng.choice([0.0, 0.0, 0.5]),
            campaign_rate=rng.choice([0.0, 0.01]),
            host=HostPolicy(
                lazy_commit=rng.random() < 0.5,
                quiesce_after=rng.choice([0, 0, 3, 3 * et]),
                pipeline=rng.random() < 0.5,
            ),
            propose_syncing=rng.choice([0.0, 0.3]),
            voters=ONE_VOTER if rng.random() < ONE_VOTER_ODDS else 0,
        )
        if not profile.voters:
            profile = dataclasses.replace(profile, wipe_rate=rng.choice([0.0, 0.0, 0.005, 0.02]))
        if profile.voters:
            # A single voter is hurt by a crash while its new term is still being written and
            # appends of that term are already out: that takes writes in flight (node/driver.py
            # always has them) and crashes aimed at an undurable term.
            profile = dataclasses.replace(
                profile,
                host=dataclasses.replace(profile.host, pipeline=True),
                crash_vote=max(profile.crash_vote, 0.2),
                propose_syncing=max(profile.propose_syncing, 0.3),
            )
        return profile
