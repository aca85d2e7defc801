"""Every seed that ever failed, kept as a regression test (tests/sim/test_sim.py runs them all).

Add a seed here the day it fails, with what was wrong and where the fix went, even when the fault
was the simulation's and not the core's. A seed names a world only together with the simulation
that ran it: when the world changes (new faults, other odds), an old seed replays a different
run. It stays anyway: it is one more seed that must pass, and its note records the lesson.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.sim.profile import SimOptions


@dataclass(slots=True, frozen=True)
class Regression:
    seed: int
    note: str
    date: str
    nodes: int | None = None
    ticks: int = SimOptions().ticks
    leader_removes_itself: bool = False

    def options(self) -> SimOptions:
        return SimOptions(
            nodes=self.nodes, ticks=self.ticks, leader_removes_itself=self.leader_removes_itself
        )


REGRESSIONS: list[Regression] = [
    Regression(
        59,
        "liveness false alarm (simulation): the healed network still delayed messages by up to "
        "a tick, and with one entry per message a leader's backlog outran the commit bound. "
        "Fix: the calm network delivers within the tick (a LAN is faster than a tick).",
        "2026-11-26",
    ),
    Regression(106, "as seed 59 (a learner far behind, one entry per message)", "2026-11-26"),
    Regression(144, "as seed 59 (a 400-entry backlog on the leader)", "2026-11-26"),
    Regression(157, "as seed 59", "2026-11-26"),
    Regression(
        532,
        "liveness false alarm (simulation): PreVote off, nodes with stale logs kept timing out "
        "first and deposing the leader. Without PreVote liveness is only probabilistic; such "
        "worlds now get their own, wider bound (world.NO_PRE_VOTE_BOUND_ETS).",
        "2026-11-26",
    ),
    Regression(809, "as seed 532 (one stale voter won nine timeout races in a row)", "2026-11-26"),
    Regression(
        2386,
        "commit durability false alarm (checker): a restarted node applying one entry per Ready "
        "had eight committed membership changes not yet applied, and the checker judged its "
        "chances with its applied configuration. The core does not campaign before it applied "
        "every committed change, so the checker now uses the configuration after them.",
        "2026-11-26",
    ),
    Regression(2559, "as seed 2386 (two committed removals not yet applied)", "2026-11-26"),
    Regression(2664, "as seed 2386", "2026-11-26"),
    Regression(2691, "as seed 2386", "2026-11-26"),
    Regression(
        757,
        "applied twice (core): node 3 applied index 1 ahead of the write holding its commit "
        "(apply ahead), snapshotted at 1, crashed before that write synced and restarted with "
        "commit 0; the core clamped applied to the stale commit and handed index 1 out again. "
        "Fix: a restart's applied index (the host's snapshot) counts as committed "
        "(raft/core.py _restart_applied; tests/raft/test_writes_in_flight.py).",
        "2026-12-05",
    ),
    Regression(
        524,
        "no leader (core contract and hosts): voters {1,4}, leader 1 removed itself and was shut "
        "down; node 4 applied the change to {4}, lost the lazily written commit in a crash and "
        "restarted in {1,4}, waiting for node 1 forever. Not the apply-ahead bug (node 4 did "
        "not apply ahead in that life). Fix: a Ready that applies a membership change syncs "
        "the commit that covers it first and is never applied ahead (Ready.applies_conf_change; "
        "tests/sim/host.py, node/driver.py; tests/node/test_driver.py). Replays with the "
        "operator of that day, who let a leader remove itself (see seed 907).",
        "2026-12-05",
        leader_removes_itself=True,
    ),
    Regression(
        907,
        "no leader (simulation's operator): leader 3 removed itself from {1,3,4,6} and stepped "
        "down on applying it before 4 and 6 heard the commit; they stayed in the old "
        "membership with 1 wiped (fenced silent), needing 3's vote, which its longer log "
        "refused. Config-on-apply Raft (etcd's too) cannot get out of that; node/moves.py never "
        "removes a leader, it hands over first, and the operator now does the same "
        "(tests/sim/actors.py). Found by the soak of seeds 0-999 after the fixes for 757/524.",
        "2026-12-05",
    ),
    Regression(
        204,
        "the simulation's host: a removed node shut down with a write still in flight, was added "
        "back with an empty log (its old replica's promises), and the old write landed in the "
        "new replica's log (missing log entry: appending at 67 to an empty log; seeds 68 and 81: "
        "a commit of 54 made durable over an empty log). Found when the promises of the "
        "learnervote branch met the writes in flight of the others. Fix: readd drops the old "
        "replica's writes in flight (tests/sim/host.py), as the broker deletes a replica only "
        "after its writes.",
        "2026-12-05",
    ),
    Regression(68, "as seed 204", "2026-12-05"),
    Regression(81, "as seed 204", "2026-12-05"),
    Regression(173, "as seed 204", "2026-12-05"),
    Regression(
        20518,
        "liveness: with appends standing in for heartbeats (a leader skipped the heartbeat to a "
        "follower it had sent an append and heard an answer from since the last heartbeat "
        "round), a wiped node was not added back within the bound: the leader lost its "
        "leadership and two pre-candidates stayed without one (issue 18, session 9, branch "
        "idlecost; brokersim seeds 50134 and 50284 left replica moves hanging the same way). "
        "Fix: the option was taken out again (reverted); heartbeats go out every round.",
        "2026-12-06",
    ),
]
