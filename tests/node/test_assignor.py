"""Server-side group assignment (node/assignor.py): balanced, sticky, every partition once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.assignor import assign


def test_a_joining_member_takes_only_what_balance_needs() -> None:
    two = assign({"a": {"t"}, "b": {"t"}}, {"t": 6}, {})
    assert sorted(map(len, two.values())) == [3, 3]
    three = assign({"a": {"t"}, "b": {"t"}, "c": {"t"}}, {"t": 6}, two)
    assert sorted(map(len, three.values())) == [2, 2, 2]
    assert three["a"] <= two["a"] and three["b"] <= two["b"]  # nothing moved between a and b


def test_a_leaving_members_partitions_go_to_the_others_and_nothing_else_moves() -> None:
    three = assign({"a": {"t"}, "b": {"t"}, "c": {"t"}}, {"t": 7}, {})
    two = assign({"a": {"t"}, "c": {"t"}}, {"t": 7}, three)
    assert three["a"] <= two["a"] and three["c"] <= two["c"]
    assert two["a"] | two["c"] == {("t", p) for p in range(7)}


def test_what_a_member_holds_wins_over_an_old_target() -> None:
    out = assign({"a": {"t"}, "b": {"t"}}, {"t": 2}, {"a": {("t", 0)}}, held={"b": {("t", 0)}})
    assert out["b"] == {("t", 0)} and out["a"] == {("t", 1)}


def test_only_subscribers_get_a_topic_and_missing_topics_are_skipped() -> None:
    out = assign({"a": {"x"}, "b": {"x", "y"}, "c": {"nope"}}, {"x": 2, "y": 3}, {})
    assert {tp for tp in out["a"]} <= {("x", 0), ("x", 1)}
    assert out["c"] == set()
    assert out["a"] | out["b"] == {("x", 0), ("x", 1), ("y", 0), ("y", 1), ("y", 2)}


members = st.dictionaries(
    st.sampled_from("abcdef"), st.sets(st.sampled_from("xyz"), min_size=1), min_size=1
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(subs=members, counts=st.fixed_dictionaries({"x": st.integers(0, 9), "y": st.integers(0, 5)}))
def test_every_partition_exactly_once_and_balanced_for_equal_subscriptions(subs, counts) -> None:  # type: ignore[no-untyped-def]
    out = assign(subs, counts, {})
    owners: dict[tuple[str, int], list[str]] = {}
    for m, tps in out.items():
        for tp in tps:
            owners.setdefault(tp, []).append(m)
            assert tp[0] in subs[m]
    wanted = {
        (t, p) for t, n in counts.items() if any(t in s for s in subs.values()) for p in range(n)
    }
    assert set(owners) == wanted and all(len(o) == 1 for o in owners.values())
    same = {m for m, s in subs.items() if s == {"x"}}
    if len(same) == len(subs):
        loads = [len(out[m]) for m in same]
        assert max(loads) - min(loads) <= 1
