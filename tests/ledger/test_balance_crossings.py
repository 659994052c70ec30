"""The credits.low / credits.exhausted rule, pure (``ledger.rules.balance_crossings``): only a
downward crossing counts, so a run of charges says each thing once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tollkeep.ledger.rules import balance_crossings

amounts = st.integers(min_value=-1000, max_value=10_000)


def test_examples() -> None:
    assert balance_crossings(100, 99, 100) == (True, False)  # reaches below the threshold
    assert balance_crossings(101, 100, 100) == (False, False)  # at the threshold is not below
    assert balance_crossings(99, 98, 100) == (False, False)  # was below already
    assert balance_crossings(15, 0, 10) == (True, True)  # both at once
    assert balance_crossings(5, 0, 10) == (False, True)  # low was said before
    assert balance_crossings(1, 0, 0) == (False, True)  # low off; exhausted always on
    assert balance_crossings(0, -3, 10) == (False, False)  # an overdraft run: said already
    assert balance_crossings(50, -5, 0) == (False, True)


@given(before=amounts, after=amounts, low=st.integers(min_value=0, max_value=5000))
def test_only_a_downward_crossing_counts(before: int, after: int, low: int) -> None:
    low_hit, exhausted = balance_crossings(before, after, low)
    assert low_hit == (low > 0 and before >= low and after < low)
    assert exhausted == (before > 0 and after <= 0)
    if after >= before:  # nothing went down: nothing crossed
        assert not low_hit and not exhausted


@given(
    start=st.integers(min_value=0, max_value=500),
    spends=st.lists(st.integers(1, 50), max_size=40),
    low=st.integers(min_value=0, max_value=300),
)
def test_a_run_of_spends_crosses_each_line_at_most_once(start: int, spends: list[int], low: int) -> None:
    balance, lows, exhausts = start, 0, 0
    for spent in spends:
        low_hit, exhausted = balance_crossings(balance, balance - spent, low)
        lows += low_hit
        exhausts += exhausted
        balance -= spent
    assert lows == (1 if low > 0 and start >= low and balance < low else 0)
    assert exhausts == (1 if start > 0 and balance <= 0 else 0)
