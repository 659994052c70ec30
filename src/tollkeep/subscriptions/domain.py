"""The subscriptions domain's rules, pure: the state machine, the billing cycles, the renewal
back-off, currency conversion. No database, no clock of its own, no web.

State machine (docs/subscriptions.md draws it): a subscription starts ``trialing`` (its plan has
``trial_days``) or ``active`` at cycle 1. When the current period ends it is either ``canceled``
(cancel at period end was asked) or ``past_due``: cycle + 1 is owed, an invoice for it is
opened. Settling that invoice makes it ``active`` at cycle + 1 (from ``past_due``, or from
``lapsed`` when the settle is late); a ``past_due`` subscription whose period end + the plan's
grace has passed is ``lapsed``. ``canceled`` is final. ``paused`` (an operator's, or the
provider's, pause of a trialing, active or past_due subscription): not renewed, not lapsed;
resuming it makes the next cycle due now (``past_due``: invoiced at once, lapsed after the grace
if unpaid); a paused subscription can also be canceled. The cycle only ever moves on a settle of
the invoice of exactly the next cycle, and every move grants that cycle's allowance once: a
sequence of events can neither skip nor repeat a cycle.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from enum import StrEnum

__all__ = [
    "BACKOFF_SECONDS",
    "MAX_RENEWAL_FAILURES",
    "TRANSITIONS",
    "ChangeKind",
    "Discount",
    "Event",
    "IllegalTransition",
    "Status",
    "SubState",
    "Transition",
    "add_periods",
    "apply",
    "change_kind",
    "convert",
    "currency_exponent",
    "cycle_bounds",
    "discounted",
    "next_attempt",
    "prorate",
    "remaining_fraction",
]


class Status(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    LAPSED = "lapsed"
    CANCELED = "canceled"
    PAUSED = "paused"


class Event(StrEnum):
    PERIOD_ENDED = "period_ended"  # the current period is over (the worker saw it)
    INVOICE_OPENED = "invoice_opened"  # the invoice of cycle + 1 exists at the provider
    INVOICE_FAILED = "invoice_failed"  # creating it failed (rate source or provider)
    SETTLED = "settled"  # the invoice of cycle + 1 was paid
    GRACE_EXPIRED = "grace_expired"  # period end + the plan's grace passed, still unpaid
    CANCEL = "cancel"  # cancel now
    CANCEL_AT_PERIOD_END = "cancel_at_period_end"
    KEEP = "keep"  # undo a cancel at period end
    RETRY = "retry"  # the operator restarts invoice creation stopped after too many failures
    PAUSE = "pause"  # no renewal, no lapse, the plan's entitlements dropped, until resumed
    RESUME = "resume"  # the next cycle is due now


S, E = Status, Event
# (state, event) -> the states it may lead to (one, except PERIOD_ENDED: canceled when a cancel
# at period end was asked, past_due otherwise). Nothing else is a transition.
TRANSITIONS: dict[tuple[Status, Event], tuple[Status, ...]] = {
    (S.TRIALING, E.PERIOD_ENDED): (S.PAST_DUE, S.CANCELED),
    (S.ACTIVE, E.PERIOD_ENDED): (S.PAST_DUE, S.CANCELED),
    (S.PAST_DUE, E.INVOICE_OPENED): (S.PAST_DUE,),
    (S.PAST_DUE, E.INVOICE_FAILED): (S.PAST_DUE,),
    (S.LAPSED, E.INVOICE_OPENED): (S.LAPSED,),
    (S.LAPSED, E.INVOICE_FAILED): (S.LAPSED,),
    (S.PAST_DUE, E.RETRY): (S.PAST_DUE,),
    (S.LAPSED, E.RETRY): (S.LAPSED,),
    (S.PAST_DUE, E.SETTLED): (S.ACTIVE,),
    (S.LAPSED, E.SETTLED): (S.ACTIVE,),
    (S.PAST_DUE, E.GRACE_EXPIRED): (S.LAPSED,),
    (S.TRIALING, E.CANCEL): (S.CANCELED,),
    (S.ACTIVE, E.CANCEL): (S.CANCELED,),
    (S.PAST_DUE, E.CANCEL): (S.CANCELED,),
    (S.LAPSED, E.CANCEL): (S.CANCELED,),
    (S.TRIALING, E.CANCEL_AT_PERIOD_END): (S.TRIALING,),
    (S.ACTIVE, E.CANCEL_AT_PERIOD_END): (S.ACTIVE,),
    (S.TRIALING, E.KEEP): (S.TRIALING,),
    (S.ACTIVE, E.KEEP): (S.ACTIVE,),
    (S.TRIALING, E.PAUSE): (S.PAUSED,),
    (S.ACTIVE, E.PAUSE): (S.PAUSED,),
    (S.PAST_DUE, E.PAUSE): (S.PAUSED,),
    (S.PAUSED, E.RESUME): (S.PAST_DUE,),
    (S.PAUSED, E.CANCEL): (S.CANCELED,),
}

MAX_RENEWAL_FAILURES = 5
# the wait after the 1st, 2nd, ... failure to create a renewal invoice
BACKOFF_SECONDS: tuple[int, ...] = (300, 1800, 7200, 21600, 43200)


class IllegalTransition(Exception):
    def __init__(self, status: Status, event: Event, why: str = "") -> None:
        self.status, self.event = status, event
        super().__init__(f"{event.value} is not allowed in {status.value}" + (f": {why}" if why else ""))


@dataclass(frozen=True)
class SubState:
    """What the machine needs to know of a subscription. ``cycle``: the last cycle paid for (or
    started: cycle 1). ``invoice_cycle``: the cycle of the open invoice (None: none open)."""

    status: Status
    cycle: int = 1
    cancel_at_period_end: bool = False
    invoice_cycle: int | None = None
    failures: int = 0

    @property
    def renewal_stopped(self) -> bool:
        return self.failures >= MAX_RENEWAL_FAILURES


@dataclass(frozen=True)
class Transition:
    state: SubState
    grant_cycle: int | None = None  # this cycle's allowance is granted (once) with this move


def apply(
    st: SubState, event: Event, *, cycle: int | None = None, max_failures: int = MAX_RENEWAL_FAILURES
) -> Transition:
    """The state ``event`` leads ``st`` to, or :class:`IllegalTransition`. ``cycle``: the
    invoice's cycle for INVOICE_OPENED and SETTLED (it must be ``st.cycle + 1``)."""
    allowed = TRANSITIONS.get((st.status, event))
    if allowed is None:
        raise IllegalTransition(st.status, event)
    if event is E.PERIOD_ENDED:
        if st.cancel_at_period_end:
            return Transition(replace(st, status=S.CANCELED, invoice_cycle=None))
        return Transition(replace(st, status=S.PAST_DUE, failures=0))
    if event is E.INVOICE_OPENED:
        if cycle != st.cycle + 1 or st.invoice_cycle is not None:
            raise IllegalTransition(st.status, event, f"an invoice opens once, for cycle {st.cycle + 1}")
        return Transition(replace(st, invoice_cycle=cycle))
    if event is E.INVOICE_FAILED:
        if st.invoice_cycle is not None or st.failures >= max_failures:
            raise IllegalTransition(st.status, event, "no invoice creation is pending")
        return Transition(replace(st, failures=st.failures + 1))
    if event is E.SETTLED:
        if st.invoice_cycle is None or cycle != st.invoice_cycle or cycle != st.cycle + 1:
            raise IllegalTransition(
                st.status, event, f"only the open invoice of cycle {st.cycle + 1} settles"
            )
        nxt = SubState(S.ACTIVE, cycle=cycle, cancel_at_period_end=False, invoice_cycle=None, failures=0)
        return Transition(nxt, grant_cycle=cycle)
    if event is E.GRACE_EXPIRED:
        return Transition(replace(st, status=S.LAPSED))
    if event is E.CANCEL:
        return Transition(replace(st, status=S.CANCELED, invoice_cycle=None))
    if event is E.RETRY:
        if st.invoice_cycle is not None:
            raise IllegalTransition(st.status, event, "the invoice exists already")
        return Transition(replace(st, failures=0))
    if event is E.PAUSE:  # a cancel at period end is withdrawn; an open invoice stays open
        return Transition(replace(st, status=S.PAUSED, cancel_at_period_end=False))
    if event is E.RESUME:  # cycle + 1 is owed from now (its open invoice, or a new one)
        return Transition(replace(st, status=S.PAST_DUE, failures=0))
    if event is E.CANCEL_AT_PERIOD_END:
        return Transition(replace(st, cancel_at_period_end=True))
    return Transition(replace(st, cancel_at_period_end=False))  # KEEP


# ---- billing cycles --------------------------------------------------------------------------
PERIOD_MONTHS = {"month": 1, "year": 12}


def add_periods(anchor: datetime, period: str, n: int) -> datetime:
    """``anchor`` + ``n`` billing periods, in UTC, always counted from the anchor so a short month
    never shifts later cycles: Jan 31 → Feb 28 (29 in a leap year) → Mar 31."""
    months = PERIOD_MONTHS.get(period)
    if months is None:
        raise ValueError(f"unknown billing period {period!r}")
    total = anchor.month - 1 + months * n
    year, month = anchor.year + total // 12, total % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def cycle_bounds(
    started_at: datetime, anchor: datetime, period: str, cycle: int
) -> tuple[datetime, datetime]:
    """[start, end) of ``cycle`` (1, 2, ...). With a trial, cycle 1 is [started_at, anchor) and
    paid cycles follow from the anchor; without one, ``anchor == started_at``."""
    if cycle < 1:
        raise ValueError("cycles count from 1")
    if anchor > started_at:  # a trial
        if cycle == 1:
            return started_at, anchor
        return add_periods(anchor, period, cycle - 2), add_periods(anchor, period, cycle - 1)
    return add_periods(anchor, period, cycle - 1), add_periods(anchor, period, cycle)


def next_attempt(failures: int, now: datetime, schedule: tuple[int, ...] = BACKOFF_SECONDS) -> datetime:
    """When to try again after the ``failures``-th failure (1-based)."""
    wait = schedule[min(failures, len(schedule)) - 1]
    return now + timedelta(seconds=wait)


# ---- money -----------------------------------------------------------------------------------
_EXPONENTS = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW"),
        0,
    ),
    **dict.fromkeys(
        ("PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "BTC": 8,
    "SAT": 0,
    "SATS": 0,
}  # fmt: skip


def currency_exponent(currency: str) -> int:
    """Decimal places of a currency (ISO 4217; BTC 8; SAT/SATS 0); 2 when not listed."""
    return _EXPONENTS.get(currency.upper(), 2)


def convert(amount_minor: int | Decimal, listed: str, rate: Decimal, target: str) -> int:
    """``amount_minor`` of ``listed`` in minor units of ``target`` at ``rate`` (``target`` major
    units per one ``listed`` major unit), exact in Decimal and rounded ONCE, at the end, to the
    nearest minor unit, halves away from zero (ROUND_HALF_UP)."""
    if not isinstance(rate, Decimal) or not rate.is_finite() or rate <= 0:
        raise ValueError(f"rate must be a positive Decimal, got {rate!r}")
    with localcontext(prec=80):
        exact = Decimal(amount_minor).scaleb(currency_exponent(target) - currency_exponent(listed)) * rate
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# ---- plan changes: proration -----------------------------------------------------------------
class ChangeKind(StrEnum):
    UPGRADE = "upgrade"  # owed now: an invoice for the prorated difference, applied when paid
    ZERO = "zero"  # nothing owed (same price, or rounds to 0): applied at once
    DOWNGRADE = "downgrade"  # cheaper: scheduled for the next renewal


def remaining_fraction(start: datetime, end: datetime, at: datetime) -> Decimal:
    """The part of the period [start, end) still ahead at ``at``, exact (microseconds), in
    [0, 1]."""
    total = (end - start) // timedelta(microseconds=1)
    if total <= 0:
        raise ValueError("a period must have a positive length")
    left = (end - max(min(at, end), start)) // timedelta(microseconds=1)
    return Decimal(left) / Decimal(total)


def prorate(
    paid_per_period: int, new_per_period: int, start: datetime, end: datetime, at: datetime
) -> Decimal:
    """What a change at ``at`` owes, EXACT (not rounded), in the listed currency's minor units:
    ``(new - paid) * remaining / period``. ``paid_per_period`` is what was actually paid for a
    full period of the plan held now (its list price after discount, as charged), so the credit
    for the time left is what was paid for it: consecutive changes in one period add up to the
    time-weighted price of the plans held. The caller rounds ONCE, on the final amount (after
    any conversion): :func:`convert`."""
    with localcontext(prec=80):
        return (Decimal(new_per_period) - Decimal(paid_per_period)) * remaining_fraction(start, end, at)


def change_kind(owed_minor: int, paid_per_period: int, new_per_period: int) -> ChangeKind:
    """How a change is carried out: a cheaper plan waits for the renewal; a change that owes a
    positive (rounded) amount is invoiced; anything else is applied at once."""
    if new_per_period < paid_per_period:
        return ChangeKind.DOWNGRADE
    return ChangeKind.UPGRADE if owed_minor > 0 else ChangeKind.ZERO


@dataclass(frozen=True)
class Discount:
    """A discount code's terms: ``percent`` off (1..100) or ``amount`` off (minor units of
    ``currency``)."""

    percent: int | None = None
    amount: int | None = None
    currency: str | None = None


def discounted(price_minor: int, currency: str, d: Discount | None) -> int:
    """``price_minor`` after the discount, never below 0. A percentage is rounded once, half up,
    to the minor unit; a fixed amount in another currency does not apply (the code's currency
    must be the listed one)."""
    if d is None or price_minor <= 0:
        return price_minor
    if d.percent is not None:
        with localcontext(prec=80):
            off = (Decimal(price_minor) * Decimal(d.percent) / 100).quantize(
                Decimal(1), rounding=ROUND_HALF_UP
            )
        return max(0, price_minor - int(off))
    if d.amount is not None and d.currency is not None and d.currency.upper() == currency.upper():
        return max(0, price_minor - d.amount)
    return price_minor
