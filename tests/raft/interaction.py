"""A driver for readable Raft scenarios, in the manner of etcd's interaction tests.

A scenario file (tests/raft/testdata/*.txt) opens with comments saying what it is about, then
holds blocks of one command line, a `----` line and the output that command must print, each
block ended by a blank line. Lines starting with `#` between blocks are comments. The driver
runs the commands against a small cluster of RawNodes, each with its own MemoryStorage, and a
network that is a plain list of messages in flight: nothing moves unless a command moves it, so
every interleaving in a file is one the reader chose.

Each node's host loop is the one raft/rawnode.py prescribes: send rd.messages, persist the
snapshot, entries and hard state into MemoryStorage, send rd.persisted_messages, apply the
committed entries (calling apply_conf_change for membership entries), then advance.

Notation in the output:
  11@2 "x"                      entry 11, term 2, data x; `noop` and `conf(v4)` for the others
  1->2 APP term=2 prev=10@1 commit=10 [11@2 noop]
                                an append whose preceding entry is 10@1
  2->1 APP_RESP term=2 index=11 an acknowledgment up to 11
  2->1 APP_RESP term=2 reject index=12 hint=9@1
                                "your append after 12 does not fit my log; we may agree at
                                9, where I have term 1"
  1->2 VOTE term=2 last=11@1    a vote request describing the candidate's last entry
  conf changes: v4 adds voter 4, l4 adds learner 4, r3 removes node 3
  (dropped)                     lost by the network (isolate, cut, drop=, or no such node)
  INFO ...                      a log record of the core, under the step that caused it

Commands (ids are node ids; `id...` means one or more, none meaning every node):
  add-nodes N [voters=(1,2,3)] [learners=(..)] [index=I] [prevote=true] [checkquorum=true]
            [lag-entries=E] [lag-ticks=T] [inflight=M]
      create N nodes with the next free ids. With index=I the log starts after a snapshot at
      I@1 holding the membership (so a later joiner needs InstallSnapshot); without voters=
      the nodes start with no membership, as a node does that is about to join. inflight=M
      is max_inflight_msgs.
  campaign id                   start an election on id now
  tick-election id...           advance the clocks by one election timeout (3 ticks)
  tick-heartbeat id...          advance the clocks by one heartbeat interval (1 tick)
  propose id data               propose an entry (data is one token)
  propose-conf-change id v4|l4|r3
  transfer-leadership from=1 to=2
  process-ready id...           run one host loop iteration on each node that has a Ready
                                (first finishing any Ready that take-ready left in flight)
  take-ready id                 take a Ready and send its `messages` (step 1), but leave its
                                write in flight: nothing of it is durable yet
  restart id                    crash and restart: lose everything not persisted (writes in
                                flight included) and boot from the node's storage
  report-unreachable id peer    the host of id tells it that peer could not be reached
  deliver-msgs [drop=(ids)] id...   step the messages addressed to id; those addressed to a
                                node in drop= are lost instead
  stabilize [id...]             process Readies and deliver messages until nothing moves
  isolate id / cut a b / recover    lose every message to and from id / between a and b;
                                recover heals every cut
  compact id index              snapshot id's applied state at index and drop the log up to it
  status id / raft-log id / raft-state / applied [id...] (what the state machines applied)

Election timeouts are not randomized here (every node uses exactly election_tick) so that a
reader can tell which node times out when; the randomization itself is tested in
test_paper.py.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    IsrPolicy,
    MemoryStorage,
    Message,
    MessageType,
    RaftError,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMeta,
)

ELECTION_TICK = 3
HEARTBEAT_TICK = 1
MAX_STABILIZE_ROUNDS = 1000


class NoJitter(random.Random):
    """A Random whose randrange is always its lowest value: the randomized election timeout
    becomes exactly election_tick, so scenarios say who times out first."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return 0 if stop is None else start


class ScenarioError(Exception):
    """A malformed command or one the cluster cannot carry out (shown as the output)."""


# -- formatting --------------------------------------------------------------------------------


def fmt_ids(ids: frozenset[int] | set[int]) -> str:
    return "(" + ",".join(str(i) for i in sorted(ids)) + ")"


def fmt_cc(cc: ConfChange) -> str:
    kind = {
        ConfChangeType.ADD_VOTER: "v",
        ConfChangeType.ADD_LEARNER: "l",
        ConfChangeType.REMOVE_NODE: "r",
    }[cc.type]
    return f"{kind}{cc.node_id}"


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.NOOP:
        body = "noop"
    elif e.type == EntryType.CONF_CHANGE:
        body = f"conf({fmt_cc(ConfChange.decode(e.data))})"
    else:
        body = '"' + e.data.decode(errors="replace") + '"'
    return f"{e.index}@{e.term} {body}"


def fmt_entries(ents: list[Entry] | tuple[Entry, ...]) -> str:
    return ", ".join(fmt_entry(e) for e in ents)


def fmt_conf(cs: ConfState) -> str:
    return f"voters={fmt_ids(cs.voters)} learners={fmt_ids(cs.learners)}"


def fmt_snapshot(s: Snapshot) -> str:
    data = f" data={s.data.decode(errors='replace')}" if s.data else ""
    return f"{s.meta.index}@{s.meta.term} {fmt_conf(s.meta.conf_state)}{data}"


def fmt_msg(m: Message) -> str:
    t = m.type
    head = f"{m.frm}->{m.to} {t.name} term={m.term}"
    if t == MessageType.APP:
        s = f"{head} prev={m.index}@{m.log_term} commit={m.commit}"
        if m.entries:
            s += f" [{fmt_entries(m.entries)}]"
        return s
    if t == MessageType.APP_RESP:
        if m.reject:
            return f"{head} reject index={m.index} hint={m.reject_hint}@{m.log_term}"
        return f"{head} index={m.index}"
    if t in (MessageType.VOTE, MessageType.PRE_VOTE):
        s = f"{head} last={m.index}@{m.log_term}"
        return s + (" transfer" if m.context else "")
    if t in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
        return f"{head} {'rejected' if m.reject else 'granted'}"
    if t == MessageType.HEARTBEAT:
        return f"{head} commit={m.commit}"
    if t == MessageType.SNAP:
        assert m.snapshot is not None
        return f"{head} snapshot={fmt_snapshot(m.snapshot)}"
    return head  # HEARTBEAT_RESP, TIMEOUT_NOW


def fmt_hard_state(hs: HardState) -> str:
    return f"term={hs.term} vote={hs.vote} commit={hs.commit}"


# -- command parsing ---------------------------------------------------------------------------


@dataclass(slots=True)
class Command:
    name: str
    args: list[str]
    kwargs: dict[str, str]

    def int_args(self) -> list[int]:
        try:
            return [int(a) for a in self.args]
        except ValueError as e:
            raise ScenarioError(f"{self.name}: node ids must be integers: {self.args}") from e

    def one_id(self) -> int:
        ids = self.int_args()
        if len(ids) != 1:
            raise ScenarioError(f"{self.name} takes exactly one node id")
        return ids[0]

    def kw_int(self, key: str, default: int) -> int:
        if key not in self.kwargs:
            return default
        try:
            return int(self.kwargs[key])
        except ValueError as e:
            raise ScenarioError(f"{self.name}: {key}= must be an integer") from e

    def kw_ids(self, key: str) -> set[int]:
        raw = self.kwargs.get(key, "").strip("()")
        try:
            return {int(x) for x in raw.split(",") if x}
        except ValueError as e:
            raise ScenarioError(f"{self.name}: {key}= must be like (1,2,3)") from e

    def kw_bool(self, key: str, default: bool) -> bool:
        raw = self.kwargs.get(key)
        if raw is None:
            return default
        if raw not in ("true", "false"):
            raise ScenarioError(f"{self.name}: {key}= must be true or false")
        return raw == "true"


def parse_command(line: str) -> Command:
    tokens = line.split()
    if not tokens:
        raise ScenarioError("empty command")
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for tok in tokens[1:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            kwargs[k] = v
        else:
            args.append(tok)
    return Command(tokens[0], args, kwargs)


# -- the cluster -------------------------------------------------------------------------------


@dataclass
class Node:
    """One node: the core, its storage, and the host's state machine (the applied data)."""

    raw: RawNode
    storage: MemoryStorage
    election_tick: int
    heartbeat_tick: int
    applied: list[tuple[int, str]] = field(default_factory=list)
    """(index, data) of every applied entry that carries data: the host's state machine."""
    confs: list[tuple[int, ConfState]] = field(default_factory=list)
    """Membership as of each applied index where it changed, to snapshot it at any index."""
    in_flight: list[Ready] = field(default_factory=list)
    """Readies taken (take-ready) whose writes are not durable yet, oldest first."""

    def conf_at(self, index: int) -> ConfState:
        cs = ConfState()
        for i, c in self.confs:
            if i <= index:
                cs = c
        return cs


class _OutputHandler(logging.Handler):
    """Writes the core's log records into the scenario output, at the current indentation."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(level=logging.INFO)
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        self._write(f"{record.levelname} {record.getMessage()}")


class InteractionEnv:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.network: list[Message] = []
        self.isolated: set[int] = set()
        self.cuts: set[frozenset[int]] = set()
        self._out: list[str] = []
        self._indent = ""
        # A private logger, not registered with logging's manager, so that scenarios neither
        # see other tests' handlers nor leak theirs.
        self.logger = logging.Logger("raft.interaction", level=logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(_OutputHandler(self._print))

    # -- plumbing ------------------------------------------------------------------------------
    def _print(self, line: str) -> None:
        self._out.append(self._indent + line)

    def run(self, line: str) -> str:
        """Run one command line; returns what it printed ("ok" when it printed nothing)."""
        self._out = []
        self._indent = ""
        cmd = parse_command(line)
        handler = self._handlers().get(cmd.name)
        try:
            if handler is None:
                raise ScenarioError(f"unknown command {cmd.name!r}")
            handler(cmd)
        except (ScenarioError, RaftError, ValueError) as e:
            self._indent = ""
            self._print(f"error: {e}")
        return "\n".join(self._out) if self._out else "ok"

    def _handlers(self) -> dict[str, Callable[[Command], None]]:
        return {
            "add-nodes": self.cmd_add_nodes,
            "campaign": self.cmd_campaign,
            "tick-election": self.cmd_tick_election,
            "tick-heartbeat": self.cmd_tick_heartbeat,
            "propose": self.cmd_propose,
            "propose-conf-change": self.cmd_propose_conf_change,
            "transfer-leadership": self.cmd_transfer_leadership,
            "process-ready": self.cmd_process_ready,
            "take-ready": self.cmd_take_ready,
            "restart": self.cmd_restart,
            "report-unreachable": self.cmd_report_unreachable,
            "applied": self.cmd_applied,
            "deliver-msgs": self.cmd_deliver_msgs,
            "stabilize": self.cmd_stabilize,
            "isolate": self.cmd_isolate,
            "cut": self.cmd_cut,
            "recover": self.cmd_recover,
            "compact": self.cmd_compact,
            "status": self.cmd_status,
            "raft-log": self.cmd_raft_log,
            "raft-state": self.cmd_raft_state,
        }

    def node(self, node_id: int) -> Node:
        n = self.nodes.get(node_id)
        if n is None:
            raise ScenarioError(f"no node {node_id}")
        return n

    def _ids(self, cmd: Command) -> list[int]:
        ids = cmd.int_args()
        for i in ids:
            self.node(i)
        return ids or sorted(self.nodes)

    def _blocked(self, m: Message) -> bool:
        return (
            m.frm in self.isolated or m.to in self.isolated or frozenset((m.frm, m.to)) in self.cuts
        )

    # -- building the cluster ------------------------------------------------------------------
    def cmd_add_nodes(self, cmd: Command) -> None:
        ids = cmd.int_args()
        if len(ids) != 1 or ids[0] < 1:
            raise ScenarioError("add-nodes takes a count: add-nodes 3 voters=(1,2,3)")
        cs = ConfState(
            voters=frozenset(cmd.kw_ids("voters")), learners=frozenset(cmd.kw_ids("learners"))
        )
        index = cmd.kw_int("index", 0)
        isr = IsrPolicy(
            max_lag_entries=cmd.kw_int("lag-entries", IsrPolicy().max_lag_entries),
            max_lag_ticks=cmd.kw_int("lag-ticks", IsrPolicy().max_lag_ticks),
        )
        first = max(self.nodes, default=0) + 1
        for node_id in range(first, first + ids[0]):
            storage = MemoryStorage(cs)
            if index > 0:
                # A group that has run at term 1 up to `index` and compacted it all away.
                storage.apply_snapshot(
                    Snapshot(meta=SnapshotMeta(index=index, term=1, conf_state=cs))
                )
                storage.set_hard_state(HardState(term=1, commit=index))
            cfg = Config(
                id=node_id,
                election_tick=ELECTION_TICK,
                heartbeat_tick=HEARTBEAT_TICK,
                rng=NoJitter(),
                applied=index,
                pre_vote=cmd.kw_bool("prevote", True),
                check_quorum=cmd.kw_bool("checkquorum", True),
                isr=isr,
                max_inflight_msgs=cmd.kw_int("inflight", 256),
                logger=self.logger,
            )
            self.nodes[node_id] = Node(
                raw=RawNode(cfg, storage),
                storage=storage,
                election_tick=ELECTION_TICK,
                heartbeat_tick=HEARTBEAT_TICK,
                confs=[(index, cs)],
            )

    # -- inputs --------------------------------------------------------------------------------
    def cmd_campaign(self, cmd: Command) -> None:
        self.node(cmd.one_id()).raw.campaign()

    def _tick(self, cmd: Command, ticks: Callable[[Node], int]) -> None:
        for node_id in self._ids(cmd):
            n = self.node(node_id)
            for _ in range(ticks(n)):
                n.raw.tick()

    def cmd_tick_election(self, cmd: Command) -> None:
        self._tick(cmd, lambda n: n.election_tick)

    def cmd_tick_heartbeat(self, cmd: Command) -> None:
        self._tick(cmd, lambda n: n.heartbeat_tick)

    def cmd_propose(self, cmd: Command) -> None:
        if len(cmd.args) != 2:
            raise ScenarioError("usage: propose id data")
        n = self.node(int(cmd.args[0]))
        index = n.raw.propose(cmd.args[1].encode())
        self._print(f"ok: index {index}")

    def cmd_propose_conf_change(self, cmd: Command) -> None:
        if len(cmd.args) != 2:
            raise ScenarioError("usage: propose-conf-change id v4|l4|r3")
        n = self.node(int(cmd.args[0]))
        spec = cmd.args[1]
        kinds = {
            "v": ConfChangeType.ADD_VOTER,
            "l": ConfChangeType.ADD_LEARNER,
            "r": ConfChangeType.REMOVE_NODE,
        }
        if len(spec) < 2 or spec[0] not in kinds or not spec[1:].isdigit():
            raise ScenarioError(f"bad conf change {spec!r}: want v<id>, l<id> or r<id>")
        index = n.raw.propose_conf_change(ConfChange(kinds[spec[0]], int(spec[1:])))
        self._print(f"ok: index {index}")

    def cmd_transfer_leadership(self, cmd: Command) -> None:
        frm, to = cmd.kw_int("from", 0), cmd.kw_int("to", 0)
        if not frm or not to:
            raise ScenarioError("usage: transfer-leadership from=1 to=2")
        self.node(frm).raw.transfer_leader(to)

    # -- the host loop -------------------------------------------------------------------------
    def cmd_process_ready(self, cmd: Command) -> None:
        ids = self._ids(cmd)
        for node_id in ids:
            n = self.node(node_id)
            if not n.raw.has_ready() and not n.in_flight:
                continue
            if len(ids) > 1:
                self._print(f"> {node_id} handling Ready")
                self._indent = "  "
            self.process_ready(node_id)
            self._indent = ""

    def cmd_take_ready(self, cmd: Command) -> None:
        node_id = cmd.one_id()
        n = self.node(node_id)
        if not n.raw.has_ready():
            return
        rd = n.raw.ready()
        self._print_ready(rd)
        self._send(rd.messages)
        n.in_flight.append(rd)

    def cmd_restart(self, cmd: Command) -> None:
        n = self.node(cmd.one_id())
        lost = len(n.in_flight)
        n.in_flight.clear()
        # The state machine is volatile: rebuild it from the snapshot; Raft hands out the
        # committed entries after it again.
        snap = n.storage.snapshot()
        meta = snap.meta
        n.applied = [(meta.index, d) for d in snap.data.decode().split(",") if d]
        n.confs = [(meta.index, meta.conf_state)]
        cfg = dataclasses.replace(n.raw.raft.cfg, rng=NoJitter(), applied=meta.index)
        n.raw = RawNode(cfg, n.storage)
        hs = n.storage.hard_state
        ahead = f", {lost} write(s) in flight lost" if lost else ""
        self._print(
            f"restarted from storage: {fmt_hard_state(hs)} last={n.storage.last_index()}{ahead}"
        )

    def cmd_report_unreachable(self, cmd: Command) -> None:
        ids = cmd.int_args()
        if len(ids) != 2:
            raise ScenarioError("usage: report-unreachable id peer")
        self.node(ids[0]).raw.report_unreachable(ids[1])

    def cmd_applied(self, cmd: Command) -> None:
        for node_id in self._ids(cmd):
            n = self.node(node_id)
            body = ", ".join(f"{i}:{d}" for i, d in n.applied)
            self._print(f"{node_id}: [{body}]")

    def process_ready(self, node_id: int) -> None:
        """One iteration of the host loop of raft/rawnode.py, printing the Ready."""
        n = self.node(node_id)
        while n.in_flight:
            self._print("(a write in flight is durable)")
            self._finish(n, n.in_flight.pop(0))
        if not n.raw.has_ready():
            return
        rd = n.raw.ready()
        self._print_ready(rd)
        # 1. Messages that may leave before anything is persisted.
        self._send(rd.messages)
        self._finish(n, rd)

    def _finish(self, n: Node, rd: Ready) -> None:
        """Steps 2 to 5 of the host loop for rd, whose messages were sent."""
        # 2. Persist.
        if rd.snapshot is not None:
            n.storage.apply_snapshot(rd.snapshot)
        if rd.hard_state is not None:
            n.storage.set_hard_state(rd.hard_state)
        n.storage.append(rd.entries)
        # 3. Messages that promise durable state.
        self._send(rd.persisted_messages)
        # 4. Apply.
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            data = rd.snapshot.data.decode()
            n.applied = [(meta.index, d) for d in data.split(",") if d]
            n.confs = [(meta.index, meta.conf_state)]
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                cs = n.raw.apply_conf_change(ConfChange.decode(e.data))
                n.confs.append((e.index, cs))
                self._print(f"applied {fmt_entry(e)}: {fmt_conf(cs)}")
            elif e.type == EntryType.NORMAL and e.data:
                n.applied.append((e.index, e.data.decode()))
        # 5. Done.
        n.raw.advance(rd)

    def _print_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            ss = rd.soft_state
            self._print(f"role: {ss.role.name} leader={ss.leader}")
        if rd.hard_state is not None:
            self._print(f"hard state: {fmt_hard_state(rd.hard_state)}")
        if rd.snapshot is not None:
            self._print(f"snapshot: {fmt_snapshot(rd.snapshot)}")
        if rd.entries:
            self._print(f"entries: {fmt_entries(rd.entries)}")
        if rd.committed_entries:
            self._print(f"committed: {fmt_entries(rd.committed_entries)}")
        if rd.messages:
            self._print("messages:")
            for m in rd.messages:
                self._print(f"  {fmt_msg(m)}{self._fate(m)}")
        if rd.persisted_messages:
            self._print("messages after persist:")
            for m in rd.persisted_messages:
                self._print(f"  {fmt_msg(m)}{self._fate(m)}")

    def _fate(self, m: Message) -> str:
        if m.to not in self.nodes:
            return f" (dropped: no node {m.to})"
        if self._blocked(m):
            return " (dropped)"
        return ""

    def _send(self, msgs: list[Message]) -> None:
        # A message over a cut link, or to a node that does not exist (yet, or any more), is
        # lost when sent; one already on its way when a link is cut is lost on delivery.
        self.network.extend(m for m in msgs if not self._fate(m))

    def cmd_deliver_msgs(self, cmd: Command) -> None:
        drop = cmd.kw_ids("drop")
        ids = cmd.int_args()
        if not ids and not drop:
            raise ScenarioError("usage: deliver-msgs [drop=(ids)] id...")
        for node_id in ids:
            self.node(node_id)
        for node_id in sorted(drop):
            self.drop_msgs(node_id)
        for node_id in ids:
            self.deliver_msgs(node_id)

    def _take(self, node_id: int) -> list[Message]:
        mine = [m for m in self.network if m.to == node_id]
        self.network = [m for m in self.network if m.to != node_id]
        return mine

    def drop_msgs(self, node_id: int) -> None:
        for m in self._take(node_id):
            self._print(f"{fmt_msg(m)} (dropped)")

    def deliver_msgs(self, node_id: int) -> None:
        n = self.node(node_id)
        for m in self._take(node_id):
            if self._blocked(m):
                self._print(f"{fmt_msg(m)} (dropped)")
                continue
            self._print(fmt_msg(m))
            indent = self._indent
            self._indent += "  "
            try:
                n.raw.step(m)
            except RaftError as e:
                self._print(f"error: {e}")
            finally:
                self._indent = indent

    def cmd_stabilize(self, cmd: Command) -> None:
        ids = self._ids(cmd)
        for _ in range(MAX_STABILIZE_ROUNDS):
            moved = False
            for node_id in ids:
                n = self.node(node_id)
                if n.raw.has_ready() or n.in_flight:
                    moved = True
                    self._print(f"> {node_id} handling Ready")
                    self._indent = "  "
                    self.process_ready(node_id)
                    self._indent = ""
            for node_id in ids:
                if any(m.to == node_id for m in self.network):
                    moved = True
                    self._print(f"> {node_id} receiving messages")
                    self._indent = "  "
                    self.deliver_msgs(node_id)
                    self._indent = ""
            if not moved:
                return
        raise ScenarioError(f"not stable after {MAX_STABILIZE_ROUNDS} rounds")

    # -- the network ---------------------------------------------------------------------------
    def cmd_isolate(self, cmd: Command) -> None:
        self.isolated.add(self.node(cmd.one_id()).raw.id)

    def cmd_cut(self, cmd: Command) -> None:
        ids = cmd.int_args()
        if len(ids) != 2:
            raise ScenarioError("usage: cut a b")
        self.cuts.add(frozenset(ids))

    def cmd_recover(self, cmd: Command) -> None:
        self.isolated.clear()
        self.cuts.clear()

    # -- storage -------------------------------------------------------------------------------
    def cmd_compact(self, cmd: Command) -> None:
        ids = cmd.int_args()
        if len(ids) != 2:
            raise ScenarioError("usage: compact id index")
        n, index = self.node(ids[0]), ids[1]
        if index > n.raw.raft.log.applied:
            raise ScenarioError(f"cannot compact at {index}: applied is {n.raw.raft.log.applied}")
        data = ",".join(d for i, d in n.applied if i <= index).encode()
        n.storage.create_snapshot(index, n.conf_at(index), data)
        n.storage.compact(index)
        self._print(f"snapshot at {index}, log starts at {n.storage.first_index()}")

    # -- views ---------------------------------------------------------------------------------
    def cmd_status(self, cmd: Command) -> None:
        n = self.node(cmd.one_id())
        st = n.raw.status()
        self._print(
            f"{st.id}: {st.role.name} term={st.term} leader={st.leader} vote={st.vote} "
            f"commit={st.commit} applied={st.applied} log=[{st.first_index}, {st.last_index}]"
        )
        self._print(fmt_conf(st.conf_state))
        for peer, pr in sorted(st.progress.items()):
            kind = " learner" if pr.is_learner else ""
            acked = "" if peer == st.id else f" acked {pr.ticks_since_ack} ticks ago"
            inflight = f" inflight={pr.inflight}" if pr.inflight else ""
            self._print(
                f"  {peer}: match={pr.match} next={pr.next} {pr.state.name}{kind}{inflight}{acked}"
            )
        if st.progress:
            self._print(f"in sync: {fmt_ids(st.in_sync)}")
        if st.lead_transferee:
            self._print(f"transferring leadership to {st.lead_transferee}")

    def cmd_raft_log(self, cmd: Command) -> None:
        n = self.node(cmd.one_id())
        log = n.raw.raft.log
        first, last = log.first_index(), log.last_index()
        if first > 1:
            snap_term = log.term(first - 1)
            self._print(f"snapshot at {first - 1}@{snap_term}")
        ents = log.slice(first, last + 1, None)
        for e in ents:
            mark = "" if e.index <= log.committed else " (uncommitted)"
            self._print(fmt_entry(e) + mark)
        if not ents:
            self._print("no entries")

    def cmd_raft_state(self, cmd: Command) -> None:
        for node_id in sorted(self.nodes):
            st = self.nodes[node_id].raw.status()
            kind = (
                "voter"
                if node_id in st.conf_state.voters
                else "learner"
                if node_id in st.conf_state.learners
                else "not a member"
            )
            note = " isolated" if node_id in self.isolated else ""
            self._print(
                f"{node_id}: {st.role.name} ({kind}) term={st.term} leader={st.leader} "
                f"commit={st.commit} last={st.last_index}{note}"
            )


# -- scenario files ----------------------------------------------------------------------------


@dataclass(slots=True)
class Block:
    line: int
    """1-based line number of the command in its file."""
    command: str
    expected: str


def parse_file(text: str) -> list[str | Block]:
    """Split a scenario into verbatim text (comments, blank lines) and command blocks."""
    lines = text.splitlines()
    parts: list[str | Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            parts.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ScenarioError(f"line {i + 1}: expected '----' after command {line!r}")
        start = i + 1
        i += 2
        expected: list[str] = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        parts.append(Block(start, line.strip(), "\n".join(expected)))
    return parts


def run_file(text: str) -> tuple[str, list[tuple[Block, str]]]:
    """Run a scenario. Returns the file as it should be (every output as produced) and the
    blocks whose expected output differed, with what was produced."""
    env = InteractionEnv()
    out: list[str] = []
    mismatches: list[tuple[Block, str]] = []
    for part in parse_file(text):
        if isinstance(part, str):
            out.append(part)
            continue
        got = env.run(part.command)
        if got != part.expected:
            mismatches.append((part, got))
        out.extend([part.command, "----", got])
    return "\n".join(out) + "\n", mismatches
