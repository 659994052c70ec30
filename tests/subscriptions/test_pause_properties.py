"""The paused state in the pure state machine (hypothesis): a paused subscription is neither
renewed nor lapsed nor invoiced, only resumed or canceled; no transition leaves the table; no
cycle is granted twice or skipped whatever pauses and resumes are mixed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tollkeep.subscriptions.domain import TRANSITIONS, Event, IllegalTransition, Status, SubState, apply

events = st.tuples(
    st.sampled_from([*Event, Event.PAUSE, Event.RESUME, Event.PAUSE, Event.RESUME]),
    st.integers(min_value=0, max_value=4),
)


def test_paused_is_left_only_by_resume_or_cancel() -> None:
    assert {e for (s, e) in TRANSITIONS if s is Status.PAUSED} == {Event.RESUME, Event.CANCEL}
    assert TRANSITIONS[(Status.PAUSED, Event.RESUME)] == (Status.PAST_DUE,)
    assert {s for (s, e) in TRANSITIONS if e is Event.PAUSE} == {
        Status.TRIALING,
        Status.ACTIVE,
        Status.PAST_DUE,
    }
    for event in (Event.PERIOD_ENDED, Event.GRACE_EXPIRED, Event.SETTLED, Event.INVOICE_OPENED, Event.PAUSE):
        try:
            apply(SubState(Status.PAUSED, cycle=3, invoice_cycle=4), event, cycle=4)
        except IllegalTransition:
            continue
        raise AssertionError(f"{event} moved a paused subscription")


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([Status.TRIALING, Status.ACTIVE]), st.lists(events, max_size=80))
def test_pauses_never_leave_the_table_nor_grant_a_cycle_twice(first: Status, seq: list) -> None:
    state = SubState(first)
    granted = [1]
    for event, n in seq:
        cycle = state.cycle + n - 2 if event in (Event.SETTLED, Event.INVOICE_OPENED) else None
        try:
            move = apply(state, event, cycle=cycle)
        except IllegalTransition:
            if event in (Event.PAUSE, Event.RESUME):  # refused only outside the table
                assert (state.status, event) not in TRANSITIONS
            continue
        assert (state.status, event) in TRANSITIONS
        assert move.state.status in TRANSITIONS[(state.status, event)]
        if state.status is Status.PAUSED:
            assert event in (Event.RESUME, Event.CANCEL) and move.grant_cycle is None
        if event in (Event.PAUSE, Event.RESUME):
            # neither moves the cycle, grants, nor forgets an open invoice (it settles after resume)
            assert move.grant_cycle is None and move.state.cycle == state.cycle
            assert move.state.invoice_cycle == state.invoice_cycle
        if move.grant_cycle is not None:
            assert move.grant_cycle == state.cycle + 1
            granted.append(move.grant_cycle)
        state = move.state
    assert granted == list(range(1, len(granted) + 1))
