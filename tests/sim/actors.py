"""The people around the cluster: clients that propose, and an operator who changes membership,
hands leadership over and now and then tells a node to campaign. They talk to whoever claims to
lead, stale leaders included, and take the core's refusals (NotLeaderError, ProposalDroppedError,
ConfChangeError) the way a real client or operator would: as answers, not failures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raft import (
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    Fence,
    NotLeaderError,
    ProposalDroppedError,
)
from tests.sim.nemesis import fmt_ids

if TYPE_CHECKING:
    from tests.sim.host import SimNode
    from tests.sim.world import World

MAX_MEMBERS = 8
MIN_VOTERS = 3
"""The operator keeps at least this many voters, so a single failure never stops the group;
in a world that starts with fewer (Profile.voters), at least that many."""


def min_voters(w: World) -> int:
    return min(MIN_VOTERS, w.profile.voters or MIN_VOTERS)


def propose(w: World) -> None:
    """A client batch of unique values, to a node that claims to lead (or, when none does, to
    any node, which refuses)."""
    rng = w.rng
    leaders = w.leaders()
    if leaders:
        sn = rng.choice(leaders)
        p = w.profile.propose_syncing
        if p and not sn.client_waiting and rng.random() < p:
            sn.client_waiting = True  # it arrives during the leader's next fsync
            return
    else:
        live = w.live()
        if not live:
            return
        sn = rng.choice(live)
    propose_to(w, sn)
    w.finish(sn)


def propose_to(w: World, sn: SimNode) -> None:
    """Propose one batch on sn, without running its host loop (the caller does, or is inside
    it: a proposal taken while the host waits for its fsync)."""
    assert sn.node is not None
    k = w.rng.randint(w.profile.min_batch, w.profile.max_batch)
    values = [b"v%d" % (w.next_value + i) for i in range(k)]
    w.next_value += k
    w.begin_step()
    try:
        if k == 1:
            sn.node.propose(values[0])
        else:
            sn.node.propose_many(values)
    except (NotLeaderError, ProposalDroppedError):
        pass


def transfer(w: World) -> None:
    lead = w.leader()
    if lead is None or lead.node is None:
        return
    targets = sorted(lead.node.raft.tracker.voters - {lead.id})
    if not targets:
        return
    to = w.rng.choice(targets)
    w.begin_step()
    try:
        lead.node.transfer_leader(to)
        w.emit("transfer", f"leader {lead.id} hands leadership to {to}", (lead.id, to))
    except (NotLeaderError, ConfChangeError):
        pass
    w.finish(lead)


def campaign_now(w: World) -> None:
    """Tell a node to start an election at once (RawNode.campaign)."""
    live = w.live()
    if not live:
        return
    sn = w.rng.choice(live)
    assert sn.node is not None
    w.begin_step()
    sn.node.campaign()
    w.finish(sn)


def change_membership(w: World) -> None:
    """Add a learner (a fresh node, or one whose earlier add never committed), promote a
    learner, or remove a member; one change at a time, through the leader. One time in ten the
    operator asks for something that makes no sense, which the core must refuse."""
    lead = w.leader()
    if lead is None or lead.node is None:
        return
    rng = w.rng
    t = lead.node.raft.tracker
    voters, learners = set(t.voters), set(t.learners)
    joiners = [
        sn
        for sn in w.nodes.values()
        if sn.id not in voters and sn.id not in learners and not sn.removed
    ]
    returning: list[SimNode] = []
    if w.readd_removed:
        # Removed and shut down: a broker's replica moved away, which a later move brings back.
        returning = [
            sn
            for sn in w.nodes.values()
            if sn.removed
            and sn.node is None
            and sn.shutdown_at is None
            and sn.id not in voters
            and sn.id not in learners
        ]
        joiners += returning
    options: list[str] = []
    if len(voters) + len(learners) < MAX_MEMBERS and (joiners or w.next_id <= w.max_id):
        options.append("add")
    if learners:
        options.append("promote")
    keep = min_voters(w)
    if len(voters) > keep or learners:
        options.append("remove")
    if not options:
        return
    choice = rng.choice(options)
    new_id = 0
    if rng.random() < 0.1:
        outsider = max(w.nodes) + 1
        cc = rng.choice(
            [
                ConfChange(ConfChangeType.ADD_VOTER, rng.choice(sorted(voters))),
                ConfChange(ConfChangeType.ADD_LEARNER, rng.choice(sorted(voters))),
                ConfChange(ConfChangeType.REMOVE_NODE, outsider),
                ConfChange(ConfChangeType.ADD_LEARNER, 0),
            ]
            + ([ConfChange(ConfChangeType.ADD_LEARNER, min(learners))] if learners else [])
        )
    elif choice == "add" and returning and rng.random() < 0.7:
        cc = ConfChange(ConfChangeType.ADD_LEARNER, rng.choice(returning).id)
    elif choice == "add":
        if joiners and (w.next_id > w.max_id or rng.random() < 0.5):
            node_id = rng.choice(joiners).id
        else:
            node_id = new_id = w.next_id
        cc = ConfChange(ConfChangeType.ADD_LEARNER, node_id)
    elif choice == "promote":
        cc = ConfChange(ConfChangeType.ADD_VOTER, rng.choice(sorted(learners)))
    else:
        pool = sorted(learners) + (sorted(voters) if len(voters) > keep else [])
        cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(pool))
        if cc.node_id == lead.id and not w.opts.leader_removes_itself:
            # The leader is the one to go: it hands over first, and the next leader removes
            # it, as node/moves.py does. A leader that removes itself and is stopped may leave
            # the remaining voters in the old membership, not knowing the removal committed,
            # and needing the removed node's vote, which its longer log refuses (seed 907).
            transfer(w)
            return
    w.begin_step()
    try:
        at = lead.node.propose_conf_change(cc)
    except ConfChangeError as e:
        w.stats.conf_refused += 1
        w.emit("member", f"refused {cc_text(cc)}: {e}", (cc.node_id,))
        w.finish(lead)
        return
    except (NotLeaderError, ProposalDroppedError):
        w.finish(lead)
        return
    w.emit("member", f"leader {lead.id} proposes {cc_text(cc)}", (cc.node_id,))
    w.finish(lead)
    back = w.nodes.get(cc.node_id)
    if cc.type == ConfChangeType.ADD_LEARNER and back is not None and back.removed:
        w.begin_step()
        w.readd(back, frozenset(voters), at)
        w.finish(back)
    if new_id:
        w.next_id += 1
        w.begin_step()
        sn = w.add_node(new_id)
        w.emit("restart", f"node {new_id} started (empty disk) to join", (new_id,))
        w.finish(sn)


def replace_wiped(w: World) -> None:
    """The operator (node/'s controller) replacing a wiped node's old incarnation, one change
    at a time through the leader: remove it, add the id back as a learner, and promote it once
    it has caught up (the world moves the node's fence when the learner's add applies)."""
    lead = w.leader()
    if lead is None or lead.node is None:
        return
    node = lead.node
    t = node.raft.tracker
    for nid, rj in list(w.rejoins.items()):
        if w.rng.random() < 0.5:
            continue  # an operator, not a reflex
        member = nid in t.voters or nid in t.learners
        if rj.stage == "add" and member and node.applied >= rj.removed_at:
            # This leader applied the removal and an add after it: every leader of its term
            # or later holds that add, so the node may speak from this term once it holds
            # what this leader applied (raft/core.py, "Rejoining after a lost disk").
            rj.stage = "promote"
            w.tell_fence(nid, Fence(min_term=node.term, index=node.applied))
            continue
        if rj.stage == "promote" and nid in t.voters:
            del w.rejoins[nid]
            w.stats.rejoined += 1
            continue
        if rj.stage == "remove" and member:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, nid)
        elif rj.stage == "add" and not member:
            cc = ConfChange(ConfChangeType.ADD_LEARNER, nid)
        elif rj.stage == "promote" and nid in t.learners:
            pr = node.progress_of(nid)
            if pr is None or pr.match < node.committed:
                continue
            cc = ConfChange(ConfChangeType.ADD_VOTER, nid)
        else:
            continue
        w.begin_step()
        try:
            node.propose_conf_change(cc)
            w.emit("member", f"leader {lead.id} proposes {cc_text(cc)} (wiped disk)", (nid,))
        except (ConfChangeError, NotLeaderError, ProposalDroppedError):
            pass
        w.finish(lead)
        return


def cc_text(cc: ConfChange) -> str:
    verb = {
        ConfChangeType.ADD_LEARNER: "add learner",
        ConfChangeType.ADD_VOTER: "promote to voter",
        ConfChangeType.REMOVE_NODE: "remove",
    }[cc.type]
    return f"{verb} {cc.node_id}"


def describe(voters: frozenset[int], learners: frozenset[int]) -> str:
    return f"voters {fmt_ids(voters)}" + (f", learners {fmt_ids(learners)}" if learners else "")
