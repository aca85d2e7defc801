"""Raft's safety properties, checked incrementally after every step of the simulation.

Each property of the paper's Figure 3, and commit monotonicity (which a broker's high watermark
relies on), is kept as a ledger that only grows, so checking a step costs in proportion to what
the step changed, not to the size of the logs:

  election safety     `leaders`: term -> the one node that led it.
  log matching        `entries`: (index, term) -> (type, data, term of the previous entry). If every
                      copy of (index, term) anywhere has the same content and the same previous
                      term, then by induction two logs that share (index, term) share everything
                      before it. Checked on every persisted append, and once more from scratch
                      at the end of a run (`final_check`) in case the induction missed something.
  leader append-only  per leader: its last index and the entry there, compared after every step of
                      its term.
  leader completeness `commit_term`: the term of each committed entry, and `commit_when`: the
                      earliest term in which it was known committed (a non-decreasing list, so the
                      last entry committed before term T is one bisect away). A new leader of term
                      T must hold that entry; by log matching it then holds all before it.
  state machine       `digests`: index -> the state machine's digest after applying it. Every node
  safety              that applies index i (or installs a snapshot at i) must reach the same digest,
                      and may only apply i once its commit index covers it. Client values are
                      unique, so one applied at two indexes is a proposal applied twice.
  commit monotonicity per node life, the in-memory commit index; across lives, the durable one.

Two more are the inductive invariants the paper's proof rests on; checking them finds a broken
rule the moment it is broken, not only in the rare runs where the damage then becomes visible:

  vote safety         `votes`: (voter, incarnation, term) -> candidate, from every vote that left
                      a node (a grant sent, a vote request sent, a vote made durable). A node
                      votes for at most one candidate per term, across restarts (§5.2, §5.4.1).
                      A node whose disk was wiped is a new incarnation (a new server reusing the
                      id, raft/core.py "Rejoining after a lost disk"): it votes only once the
                      group replaced the old one, and its fence is what makes that safe.
  commit durability   the latest committed entry can never be lost: no live voter that lacks it
                      could collect a majority of its configuration with its log, counting every
                      voter whose log on disk is not more up to date (the argument of §5.4.3).
                      This is leader completeness before the fact; Figure 8 breaks it.

A broken property raises SafetyViolation naming it, the nodes, the index and term, and the step.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from raft import (
    NONE,
    CompactedError,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    Ready,
    Role,
    Snapshot,
)
from raft.log import RaftLog
from tests.sim.host import Machine, SimNode, chain_digest


class Violation(AssertionError):
    """A property of the simulated cluster does not hold. str() is the full report."""

    def __init__(self, prop: str, detail: str, step: int, tick: int) -> None:
        super().__init__(f"{prop} violated at step {step} (tick {tick}): {detail}")
        self.prop = prop
        self.detail = detail
        self.step = step
        self.tick = tick


class SafetyViolation(Violation):
    """Something Raft promises never happens happened."""


class LivenessViolation(Violation):
    """Something Raft promises eventually (once the world is calm) did not happen in time."""


@dataclass(slots=True)
class _Watch:
    """What the checker remembers about one life of one node."""

    life: int
    commit: int
    lead_term: int = 0  # term this life last led (0: never)
    lead_last: int = 0  # the leader's last index after its previous step
    lead_entry: Entry | None = None  # the entry there (None: only a snapshot point)


class Checker:
    def __init__(self) -> None:
        self.step = 0
        self.tick = 0
        self.leaders: dict[int, int] = {}
        self.entries: dict[tuple[int, int], tuple[EntryType, bytes, int]] = {}
        # Index 0 is the bootstrap snapshot point: committed at term 0 by definition.
        self.commit_term: list[int] = [0]
        self.commit_when: list[int] = [0]
        self.digests: list[bytes] = [Machine().digest]
        self.value_index: dict[bytes, int] = {}
        self.votes: dict[tuple[int, int, int], int] = {}
        self._restart_conf: dict[tuple[int, int], frozenset[int]] = {}
        self.on_elected: Callable[[SimNode], None] | None = None
        """Called once per new leader (the world tells, and may aim a fault at it)."""
        self._watch: dict[int, _Watch] = {}
        self.checks = 0  # property evaluations, for the summary

    def fail(self, prop: str, detail: str) -> SafetyViolation:
        return SafetyViolation(prop, detail, self.step, self.tick)

    @property
    def committed(self) -> int:
        """The highest index any node ever committed."""
        return len(self.commit_term) - 1

    # -- after every step ----------------------------------------------------------------------
    def observe(self, sn: SimNode) -> None:
        """Check what one step may have changed on node sn (its role, log, commit index)."""
        node = sn.node
        if node is None:
            return
        raft = node.raft
        w = self._watch.get(sn.id)
        if w is None or w.life != sn.life:
            w = self._new_life(sn)
        self._observe_commit(sn, w)
        self.checks += 1
        if raft.role != Role.LEADER:
            return
        log = raft.log
        if w.lead_term != raft.term:
            self._elected(sn, w)
            return
        # Leader append-only: during its term a leader only appends.
        last = log.last_index()
        if last < w.lead_last:
            raise self.fail(
                "leader append-only",
                f"leader {sn.id} of term {raft.term} shrank its log from {w.lead_last} to {last}",
            )
        before = w.lead_entry
        if before is not None:
            now = _entry_at(log, before.index)
            if now is not None and now != before:
                raise self.fail(
                    "leader append-only",
                    f"leader {sn.id} of term {raft.term} overwrote index {before.index}: "
                    f"{_show_entry(before)} (term {before.term}) became {_show_entry(now)} "
                    f"(term {now.term})",
                )
        w.lead_last = last
        w.lead_entry = _entry_at(log, last)

    def _new_life(self, sn: SimNode) -> _Watch:
        assert sn.node is not None
        commit = sn.node.raft.log.committed
        if commit < sn.durable_commit:
            raise self.fail(
                "commit monotonicity",
                f"node {sn.id} restarted with commit {commit} below its durable commit "
                f"{sn.durable_commit}",
            )
        w = _Watch(life=sn.life, commit=commit)
        self._watch[sn.id] = w
        return w

    def _elected(self, sn: SimNode, w: _Watch) -> None:
        assert sn.node is not None
        raft = sn.node.raft
        term = raft.term
        # Election safety: at most one leader per term.
        other = self.leaders.setdefault(term, sn.id)
        if other != sn.id:
            raise self.fail(
                "election safety", f"nodes {other} and {sn.id} are both leaders of term {term}"
            )
        # Leader completeness: every entry committed before this term is in our log. Checking
        # the last such entry is enough: log matching (checked separately) gives the rest.
        i = bisect.bisect_left(self.commit_when, term) - 1
        if i > 0:
            log = raft.log
            want = self.commit_term[i]
            if i < log.first_index() - 1:
                # Below our snapshot point: our snapshot is applied state, hence committed; it
                # covers i if the snapshot point itself is a committed entry.
                s = log.first_index() - 1
                if s <= self.committed and self.commit_term[s] != log.term(s):
                    raise self.fail(
                        "leader completeness",
                        f"new leader {sn.id} of term {term} has index {s} at term {log.term(s)}, "
                        f"but term {self.commit_term[s]} was committed there",
                    )
            else:
                have = log.term(i) if i <= log.last_index() else None
                if have != want:
                    holds = "lacks it" if have is None else f"has term {have} there"
                    raise self.fail(
                        "leader completeness",
                        f"new leader {sn.id} of term {term}: index {i} was committed at term "
                        f"{want} in term {self.commit_when[i]}, but the leader {holds} "
                        f"(its last index {log.last_index()})",
                    )
        w.lead_term = term
        w.lead_last = raft.log.last_index()
        w.lead_entry = _entry_at(raft.log, w.lead_last)
        if self.on_elected is not None:
            self.on_elected(sn)

    def _observe_commit(self, sn: SimNode, w: _Watch) -> None:
        """Record what sn's commit index newly covers, and check it never goes back."""
        node = sn.node
        assert node is not None
        raft = node.raft
        c = raft.log.committed
        if c == w.commit:
            return
        if c < w.commit:
            raise self.fail(
                "commit monotonicity", f"node {sn.id} commit went back from {w.commit} to {c}"
            )
        log = raft.log
        lo = max(w.commit + 1, log.first_index() - 1)
        terms, when = self.commit_term, self.commit_when
        known = len(terms) - 1
        if lo > known + 1:
            raise self.fail(
                "state machine safety",
                f"node {sn.id} committed {lo}..{c} but nobody ever committed {known + 1}",
            )
        for i in range(lo, c + 1):
            t = log.term(i)
            if i <= known:
                if terms[i] != t:
                    raise self.fail(
                        "state machine safety",
                        f"node {sn.id} committed index {i} at term {t}, "
                        f"but term {terms[i]} was committed there before",
                    )
            else:
                terms.append(t)
                when.append(raft.term)
        # Known committed as of our term: lower the earliest-term record of everything below.
        j = min(c, known)
        u = raft.term
        while j > 0 and when[j] > u:
            when[j] = u
            j -= 1
        w.commit = c

    # -- inside the host loop ------------------------------------------------------------------
    def sent(self, sn: SimNode, msgs: list[Message]) -> None:
        """Votes leave a node as grants and as vote requests (a candidate votes for itself)."""
        for m in msgs:
            t = m.type
            if t == MessageType.VOTE_RESP:
                if not m.reject:
                    self._vote(sn, m.term, m.to, "granted")
            elif t == MessageType.VOTE:
                self._vote(sn, m.term, m.frm, "campaigned")

    def _vote(self, sn: SimNode, term: int, candidate: int, how: str) -> None:
        old = self.votes.setdefault((sn.id, sn.incarnation, term), candidate)
        if old != candidate:
            inc = f" (incarnation {sn.incarnation})" if sn.incarnation else ""
            raise self.fail(
                "vote safety",
                f"node {sn.id}{inc} voted for {old} and for {candidate} in term {term} "
                f"(the second time: {how})",
            )

    def persisted(self, sn: SimNode, rd: Ready) -> None:
        """Step 2 of the loop is done: check what reached sn's disk."""
        st = sn.storage
        first = st.first_index()
        ledger = self.entries
        prev_term = -1
        prev_index = -1
        for e in rd.entries:
            if e.index < first:
                continue  # below our snapshot: already committed, not stored again
            pt = prev_term if prev_index == e.index - 1 else st.term(e.index - 1)
            key = (e.index, e.term)
            val = (e.type, e.data, pt)
            old = ledger.setdefault(key, val)
            if old != val:
                raise self.fail(
                    "log matching",
                    f"node {sn.id} persisted index {e.index} term {e.term} as "
                    f"{_show(val)}, another log holds {_show(old)}",
                )
            prev_term, prev_index = e.term, e.index
        if rd.snapshot is not None:
            self._check_snapshot(sn, rd.snapshot)
        hs = sn.synced  # what a crash leaves (a lazily written commit index is not in it)
        if rd.hard_state is not None and hs.vote != NONE:
            self._vote(sn, hs.term, hs.vote, "made durable")
        if hs.commit < sn.durable_commit:
            raise self.fail(
                "commit monotonicity",
                f"node {sn.id} durable commit went back from {sn.durable_commit} to {hs.commit}",
            )
        if hs.commit > st.last_index():
            raise self.fail(
                "durable state",
                f"node {sn.id} made commit {hs.commit} durable with its log ending at "
                f"{st.last_index()}: it could not restart",
            )
        sn.durable_commit = hs.commit

    def _check_snapshot(self, sn: SimNode, snap: Snapshot) -> None:
        i, t = snap.meta.index, snap.meta.term
        if i > self.committed or self.commit_term[i] != t:
            raise self.fail(
                "state machine safety",
                f"node {sn.id} received a snapshot at index {i} term {t} that is not committed "
                f"(committed up to {self.committed})",
            )
        if i >= len(self.digests) or self.digests[i] != Machine.decode(snap.data).digest:
            raise self.fail(
                "state machine safety",
                f"node {sn.id} received a snapshot at index {i} whose state no node applied",
            )

    def applying(self, sn: SimNode, e: Entry) -> None:
        """sn is about to apply e: it must be committed, next in line, and what others applied."""
        node = sn.node
        assert node is not None
        commit = node.raft.log.committed
        if e.index > commit:
            raise self.fail(
                "state machine safety",
                f"node {sn.id} applies index {e.index} (term {e.term}) past its commit index "
                f"{commit}",
            )
        m = sn.machine
        if e.index != m.index + 1:
            raise self.fail(
                "state machine safety",
                f"node {sn.id} applies index {e.index} right after {m.index}",
            )
        digest = chain_digest(m.digest, e)
        ds = self.digests
        if e.index < len(ds):
            if ds[e.index] != digest:
                raise self.fail(
                    "state machine safety",
                    f"node {sn.id} applied index {e.index} (term {e.term}, {_show_entry(e)}) "
                    "differently from a node that applied it before",
                )
        else:
            ds.append(digest)
        if e.type == EntryType.NORMAL:
            at = self.value_index.setdefault(e.data, e.index)
            if at != e.index:
                raise self.fail(
                    "state machine safety",
                    f"value {e.data!r} applied at index {e.index} on node {sn.id}, "
                    f"and at index {at} before: a proposal applied twice",
                )

    def installed_snapshot(self, sn: SimNode, snap: Snapshot) -> None:
        self._check_snapshot(sn, snap)

    def check_durability(self, nodes: Iterable[SimNode]) -> None:
        """Commit durability (see the module docstring), for the latest committed entry: by log
        matching, whoever holds it holds everything committed before it."""
        c = self.committed
        if c == 0:
            return
        t = self.commit_term[c]
        nodes = list(nodes)
        disk: dict[int, tuple[int, int]] = {}
        fenced: set[int] = set()
        for sn in nodes:
            st = sn.storage
            last = st.last_index()
            disk[sn.id] = (st.term(last), last)
            if _fenced(sn):
                fenced.add(sn.id)
        for sn in nodes:
            node = sn.node
            if sn.id in fenced:
                continue  # a wiped node that may not vote yet campaigns neither
            if node is not None:
                raft = node.raft
                log = raft.log
                if c < log.first_index() - 1:
                    continue  # compacted into a snapshot of committed state: held
                if c <= log.last_index() and log.term(c) == t:
                    continue
                # The configuration it campaigns with: the core waits until every committed
                # membership change is applied before it campaigns.
                voters: set[int] | frozenset[int] = raft.tracker.voters
                if log.committed > log.applied:
                    try:
                        pending = log.slice(log.applied + 1, log.committed + 1, None)
                    except CompactedError:
                        pending = []
                    voters = _apply_voters(set(voters), pending)
                if sn.id not in voters:
                    continue
                mine = (log.last_term(), log.last_index())
            elif sn.removed:
                continue  # stopped for good
            else:
                # Down, but it will be back with its disk and campaign with that.
                st = sn.storage
                if c < st.first_index() - 1:
                    continue
                if c <= st.last_index() and st.term(c) == t:
                    continue
                voters = self._restart_voters(sn)
                if sn.id not in voters:
                    continue
                mine = disk[sn.id]
            grants = sorted(
                v for v in voters if v == sn.id or (v not in fenced and mine >= disk.get(v, (0, 0)))
            )
            if len(grants) > len(voters) // 2:
                raise self.fail(
                    "commit durability",
                    f"index {c} (term {t}) is committed, but node {sn.id}, which lacks it (last "
                    f"index {mine[1]}, term {mine[0]}), could be elected by {grants}: their logs "
                    f"on disk are no more up to date (voters {sorted(voters)})",
                )
        self.checks += 1

    def _restart_voters(self, sn: SimNode) -> frozenset[int]:
        """The voters a down node will know once it restarted and re-applied what its disk says
        is committed (it does not campaign before that)."""
        key = (sn.id, sn.life)
        cached = self._restart_conf.get(key)
        if cached is not None:
            return cached
        st = sn.storage
        snap = st.snapshot()
        lo = max(snap.meta.index + 1, st.first_index())
        hi = min(st.hard_state.commit, st.last_index())
        ents = st.entries(lo, hi + 1) if hi >= lo else []
        result = frozenset(_apply_voters(set(snap.meta.conf_state.voters), ents))
        self._restart_conf[key] = result
        return result

    # -- at the end ----------------------------------------------------------------------------
    def final_check(self, nodes: list[SimNode]) -> None:
        """Log matching from scratch over every disk, alive or not: the induction's backstop."""
        logs: list[tuple[SimNode, int, dict[int, int], dict[int, Entry]]] = []
        for sn in nodes:
            st = sn.storage
            first, last = st.first_index(), st.last_index()
            ents = st.entries(first, last + 1) if last >= first else []
            terms = {first - 1: st.term(first - 1)}
            byidx: dict[int, Entry] = {}
            for e in ents:
                terms[e.index] = e.term
                byidx[e.index] = e
            logs.append((sn, first - 1, terms, byidx))
        for a in range(len(logs)):
            for b in range(a + 1, len(logs)):
                self._match_pair(logs[a], logs[b])
        # Every durable log's committed prefix agrees with the commit ledger.
        for sn, lo, terms, _ in logs:
            for i in range(lo, min(sn.storage.hard_state.commit, self.committed) + 1):
                if i in terms and terms[i] != self.commit_term[i]:
                    raise self.fail(
                        "state machine safety",
                        f"node {sn.id}'s disk has index {i} at term {terms[i]} below its commit, "
                        f"term {self.commit_term[i]} was committed",
                    )

    def _match_pair(
        self,
        x: tuple[SimNode, int, dict[int, int], dict[int, Entry]],
        y: tuple[SimNode, int, dict[int, int], dict[int, Entry]],
    ) -> None:
        sx, lox, tx, ex = x
        sy, loy, ty, ey = y
        lo = max(lox, loy)
        hi = min(max(tx), max(ty))
        agreed = False
        for i in range(hi, lo - 1, -1):
            same = tx[i] == ty[i]
            if agreed and not same:
                raise self.fail(
                    "log matching",
                    f"nodes {sx.id} and {sy.id} agree on a later entry but differ at index {i} "
                    f"(terms {tx[i]} and {ty[i]})",
                )
            if same:
                agreed = True
                a, b = ex.get(i), ey.get(i)
                if a is not None and b is not None and a != b:
                    raise self.fail(
                        "log matching",
                        f"nodes {sx.id} and {sy.id} hold different entries at index {i} term {tx[i]}",
                    )


def _fenced(sn: SimNode) -> bool:
    """Whether a wiped node, or a node added back below its old replica's last entry, may not
    vote or campaign (its fence, raft/core.py), live or down (a down node restarts with the
    fence its disk holds, at its durable commit index and the log on its disk)."""
    if sn.node is not None:
        f = sn.node.fence
        log = sn.node.raft.log
        commit, last = log.committed, (log.last_term(), log.last_index())
    else:
        f = sn.fence
        st = sn.storage
        commit, last = st.hard_state.commit, (st.term(st.last_index()), st.last_index())
    if f is None:
        return False
    below_floor = f.floor_index > 0 and last < (f.floor_term, f.floor_index)
    return f.min_term == 0 or commit < f.index or below_floor


def _entry_at(log: RaftLog, index: int) -> Entry | None:
    """The entry at index, or None when it is compacted (then it is committed, and the commit
    ledger covers it)."""
    try:
        return log.slice(index, index + 1, None)[0]
    except CompactedError:
        return None


def _apply_voters(voters: set[int], entries: list[Entry]) -> set[int]:
    """The voters after the membership changes among `entries`."""
    for e in entries:
        if e.type == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            if cc.type == ConfChangeType.ADD_VOTER:
                voters.add(cc.node_id)
            elif cc.type == ConfChangeType.REMOVE_NODE:
                voters.discard(cc.node_id)
    return voters


def _show(val: tuple[EntryType, bytes, int]) -> str:
    kind, data, prev = val
    return f"{kind.name} {data[:24]!r} after term {prev}"


def _show_entry(e: Entry) -> str:
    return f"{e.type.name} {e.data[:24]!r}"
