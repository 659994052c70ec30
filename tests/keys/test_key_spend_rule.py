"""The per-key spend admission rule, pure (no database): ``rules.key_use`` and
``rules.key_spend_refusal``, the very functions ``ledger/keyspend.py`` calls in the charge's
transaction. A hypothesis state machine opens holds, settles, releases and charges across days
and months and compares every decision with an independent model of the windows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tollkeep.ledger.keyspend import day_of
from tollkeep.ledger.rules import KeyLimits, KeyUse, key_spend_refusal, key_use

limits_st = st.builds(
    KeyLimits,
    total=st.none() | st.integers(0, 60),
    daily=st.none() | st.integers(0, 20),
    monthly=st.none() | st.integers(0, 40),
)


class KeyBudget(RuleBasedStateMachine):
    """The key's rows as the database keeps them (day -> [spent, held]), changed only through
    what the rule admits, against a model that sums each window from the events themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.today = date(2030, 1, 27)
        self.rows: dict[str, list[int]] = {}
        self.events: list[tuple[date, int]] = []  # (day counted on, amount spent or held)
        self.open: list[tuple[date, int, int]] = []  # (day, amount, index in events)
        self.limits = KeyLimits()

    def _use(self, day: str) -> KeyUse:
        return key_use(((d, s + h) for d, (s, h) in self.rows.items()), day)

    def _model(self, day: date) -> tuple[int, int, int]:
        total = sum(a for _, a in self.events)
        month = sum(a for d, a in self.events if (d.year, d.month) == (day.year, day.month))
        today = sum(a for d, a in self.events if d == day)
        return total, month, today

    def _fits(self, day: date, amount: int) -> bool:
        if amount == 0:
            return True
        total, month, today = self._model(day)
        lim = self.limits
        return (
            (lim.total is None or total + amount <= lim.total)
            and (lim.monthly is None or month + amount <= lim.monthly)
            and (lim.daily is None or today + amount <= lim.daily)
        )

    def _admit(self, day: date, amount: int) -> bool:
        key = day.isoformat()
        admitted = key_spend_refusal(self.limits, self._use(key), amount) is None
        assert admitted == self._fits(day, amount)
        return admitted

    @rule(limits=limits_st)
    def set_limits(self, limits: KeyLimits) -> None:
        self.limits = limits

    @rule(days=st.integers(1, 20))
    def time_passes(self, days: int) -> None:
        self.today += timedelta(days=days)

    @rule(amount=st.integers(0, 9))
    def charge(self, amount: int) -> None:
        if self._admit(self.today, amount):
            self.rows.setdefault(self.today.isoformat(), [0, 0])[0] += amount
            self.events.append((self.today, amount))

    @rule(amount=st.integers(0, 9))
    def open_hold(self, amount: int) -> None:
        if self._admit(self.today, amount):
            self.rows.setdefault(self.today.isoformat(), [0, 0])[1] += amount
            self.open.append((self.today, amount, len(self.events)))
            self.events.append((self.today, amount))

    @precondition(lambda self: self.open)
    @rule(data=st.data(), settle=st.booleans(), actual=st.integers(0, 12))
    def resolve(self, data: st.DataObject, settle: bool, actual: int) -> None:
        i = data.draw(st.integers(0, len(self.open) - 1))
        day, amount, at = self.open[i]
        final = actual if settle else 0
        if final > amount and not self._admit(day, final - amount):
            return  # settling above the hold is checked on the hold's day, like a new charge
        self.open.pop(i)
        row = self.rows[day.isoformat()]
        row[1] -= amount
        row[0] += final
        self.events[at] = (day, final)

    @invariant()
    def rows_match_the_events(self) -> None:
        total, month, today = self._model(self.today)
        assert self._use(self.today.isoformat()) == KeyUse(total, month, today)

    @invariant()
    def windows_admitted_under_the_limits_stay_under_them(self) -> None:
        # what the rule let in never passes a limit set before it (a limit lowered later may
        # be below what was spent: then nothing more is admitted)
        for d, s_h in self.rows.items():
            assert s_h[1] >= 0 and s_h[0] >= 0, d


TestKeyBudget = KeyBudget.TestCase
TestKeyBudget.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(limits=limits_st, amounts=st.lists(st.integers(0, 15), max_size=40))
def test_admitted_charges_never_pass_a_limit(limits: KeyLimits, amounts: list[int]) -> None:
    day = "2030-05-17"
    spent = 0
    for a in amounts:
        if key_spend_refusal(limits, key_use([(day, spent)], day), a) is None:
            spent += a
    for limit in (limits.total, limits.daily, limits.monthly):
        assert limit is None or spent <= limit


def test_refusal_names_the_window_and_nothing_is_always_admitted() -> None:
    lim = KeyLimits(total=10, daily=3)
    use = key_use([("2030-01-01", 4), ("2030-01-31", 3)], "2030-01-31")
    assert use == KeyUse(total=7, month=7, day=3)
    assert key_spend_refusal(lim, use, 1) == ("daily", 3, 3)
    assert key_spend_refusal(lim, use, 4) == ("total", 10, 7)
    assert key_spend_refusal(KeyLimits(total=0), KeyUse(total=5), 0) is None


def test_a_day_is_the_utc_day() -> None:
    late = datetime(2030, 3, 31, 23, 30, tzinfo=UTC)
    assert day_of(late) == "2030-03-31"
    assert day_of(late.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))) == "2030-03-31"
