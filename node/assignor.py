"""Server-side partition assignment for consumer groups: balanced, and sticky.

A plain function of (members and their subscriptions, partition counts, the previous target), so
it is deterministic and testable without a cluster. Sticky: a partition stays with its previous
member whenever balance allows, so a rebalance moves only the partitions it must (incremental
cooperative rebalancing revokes exactly those). Balanced: every member ends with as many
partitions as any other member that could take one of its partitions, give or take one.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

__all__ = ["TP", "assign"]

TP = tuple[str, int]


def assign(
    subscriptions: Mapping[str, Set[str]],
    partition_counts: Mapping[str, int],
    previous: Mapping[str, Set[TP]],
    held: Mapping[str, Set[TP]] | None = None,
) -> dict[str, set[TP]]:
    """member id -> the partitions it should hold. Topics missing from partition_counts (not
    created yet) are skipped; every partition of a subscribed topic goes to exactly one
    subscriber. Stickiness prefers what a member actually holds (`held`), then its previous
    target."""
    members = sorted(subscriptions)
    out: dict[str, set[TP]] = {m: set() for m in members}
    if not members:
        return out
    eligible: dict[str, list[str]] = {}
    for m in members:
        for topic in subscriptions[m]:
            if topic in partition_counts:
                eligible.setdefault(topic, []).append(m)
    all_tps = sorted((t, p) for t in eligible for p in range(partition_counts[t]))
    wanted = set(all_tps)

    # 1. Keep what each member holds, then what it was meant to hold, if it still subscribes
    # (the first claimant wins a conflict).
    owner: dict[TP, str] = {}
    for source in (held or {}, previous):
        for m in members:
            for tp in sorted(source.get(m, ())):
                if tp in wanted and tp not in owner and tp[0] in subscriptions[m]:
                    owner[tp] = m
                    out[m].add(tp)

    # 2. Give every unowned partition to its least loaded subscriber.
    for tp in all_tps:
        if tp not in owner:
            m = min(eligible[tp[0]], key=lambda x: (len(out[x]), x))
            owner[tp] = m
            out[m].add(tp)

    # 3. Balance: move one partition at a time from the most to the least loaded member that
    # may take it, while that narrows the gap. Each move lowers the sum of squared loads, so
    # this ends.
    while True:
        moved = False
        for heavy in sorted(members, key=lambda x: (-len(out[x]), x)):
            candidates = [
                (len(out[light]), light, tp)
                for tp in sorted(out[heavy], reverse=True)
                for light in eligible[tp[0]]
                if len(out[light]) + 1 < len(out[heavy])
            ]
            if candidates:
                _, light, tp = min(candidates)
                out[heavy].discard(tp)
                out[light].add(tp)
                moved = True
                break
        if not moved:
            return out
