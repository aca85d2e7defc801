"""Property tests: the clever computations of raft/quorum.py and raft/progress.py against naive
ones (in the spirit of etcd's quorum/quick_test.go)."""

from __future__ import annotations

from collections import deque
from itertools import combinations, product

from hypothesis import given, settings
from hypothesis import strategies as st

from raft.progress import Inflights
from raft.quorum import VoteResult, committed_index, vote_result

voter_sets = st.sets(st.integers(1, 9), max_size=7)


@st.composite
def voters_and_matches(draw: st.DrawFn) -> tuple[set[int], dict[int, int]]:
    voters = draw(voter_sets)
    # Matches for some voters (the rest count as 0) and for some non-voters (ignored).
    ids = sorted(voters | draw(st.sets(st.integers(10, 12), max_size=2)))
    known = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
    return voters, {i: draw(st.integers(0, 20)) for i in known}


def naive_committed(voters: set[int], match: dict[int, int]) -> int:
    """The largest index that every member of some majority holds: look at every majority."""
    if not voters:
        return 0
    need = len(voters) // 2 + 1
    return max(
        min(match.get(v, 0) for v in group)
        for size in range(need, len(voters) + 1)
        for group in combinations(sorted(voters), size)
    )


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(voters_and_matches())
def test_committed_index_is_what_some_majority_holds(
    case: tuple[set[int], dict[int, int]],
) -> None:
    voters, match = case
    assert committed_index(voters, match) == naive_committed(voters, match)


@st.composite
def voters_and_votes(draw: st.DrawFn) -> tuple[set[int], dict[int, bool]]:
    voters = draw(voter_sets)
    ids = sorted(voters | draw(st.sets(st.integers(10, 12), max_size=2)))
    known = draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []
    return voters, {i: draw(st.booleans()) for i in known}


def naive_vote_result(voters: set[int], votes: dict[int, bool]) -> VoteResult:
    """Try every way the missing votes could still go: WON if the election is won already,
    LOST if no outcome wins it, PENDING otherwise."""

    def wins(outcome: dict[int, bool]) -> bool:
        return sum(outcome[v] for v in voters) > len(voters) / 2

    if not voters:
        return VoteResult.WON
    missing = sorted(v for v in voters if v not in votes)
    outcomes = [
        {**{v: votes[v] for v in voters if v in votes}, **dict(zip(missing, bits, strict=True))}
        for bits in product([False, True], repeat=len(missing))
    ]
    if wins({v: votes.get(v, False) for v in voters}):
        return VoteResult.WON
    if not any(wins(o) for o in outcomes):
        return VoteResult.LOST
    return VoteResult.PENDING


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(voters_and_votes())
def test_vote_result_against_every_way_the_missing_votes_could_go(
    case: tuple[set[int], dict[int, bool]],
) -> None:
    voters, votes = case
    assert vote_result(voters, votes) == naive_vote_result(voters, votes)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 5)),  # add the last index + this step
        st.tuples(st.just("free_le"), st.integers(0, 60)),
        st.tuples(st.just("free_first_one"), st.just(0)),
        st.tuples(st.just("reset"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 8), ops)
def test_inflights_behaves_like_a_bounded_queue_of_increasing_indexes(
    capacity: int, script: list[tuple[str, int]]
) -> None:
    inf = Inflights(capacity)
    model: deque[int] = deque()
    last = 0
    for op, arg in script:
        if op == "add":
            if len(model) >= capacity:
                continue  # the leader never sends while the window is full
            last += arg
            inf.add(last)
            model.append(last)
        elif op == "free_le":
            inf.free_le(arg)
            model = deque(i for i in model if i > arg)
        elif op == "free_first_one":
            inf.free_first_one()
            if model:
                model.popleft()
        else:
            inf.reset()
            model.clear()
        assert inf.count() == len(model)
        assert inf.full() == (len(model) >= capacity)
