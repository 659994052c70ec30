"""The use cases' rules, pure: what a hold gives back, what a refund gives back and to whom,
what a cap allows and what the meter counters become. No database, no clock of their own.

The use cases read what these need (a wallet state, counters, what open holds reserve), call
them, and write back what they return; the property tests call the very same functions
(``tests/ledger/test_domain_properties.py``, ``test_meter_caps_matrix.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tollkeep.kit.clock import SubscriptionPeriods, iso, usage_period
from tollkeep.kit.errors import CapExceeded, InsufficientCredits
from tollkeep.kit.ids import new_id
from tollkeep.ledger.domain import DEFAULT_PRIORITY, Draw, GrantState, WalletState, subtract_draws, take_back
from tollkeep.ledger.kinds import EntryKind, GrantSource

if TYPE_CHECKING:
    from tollkeep.catalog import Cap

__all__ = [
    "NO_ALLOWANCE",
    "Counters",
    "GiveBack",
    "GrantMeta",
    "KeyLimits",
    "KeySpendLimitExceeded",
    "KeyUse",
    "balance_crossings",
    "check_caps",
    "counter_updates",
    "give_back_hold",
    "give_back_refund",
    "key_spend_refusal",
    "key_use",
    "new_grant",
    "refund_left",
]

GrantMeta = dict[str, dict[str, Any]]  # grant id -> {"operation_id", "note"}: written with the grant


def balance_crossings(before: int, after: int, low: int) -> tuple[bool, bool]:
    """(credits.low, credits.exhausted) for a spend that took a wallet's available credits from
    ``before`` to ``after``: only a crossing counts, downward. Low: ``before >= low > after``
    (``low`` 0 is off); exhausted: ``after <= 0 < before``. A wallet already below the threshold,
    or already at 0, crosses nothing, so a run of charges on an empty or low wallet says it once."""
    return 0 < low <= before and after < low, after <= 0 < before


def new_grant(
    st: WalletState,
    meta: GrantMeta,
    *,
    amount: int,
    source: str,
    now: datetime,
    operation_id: str,
    priority: int | None = None,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    meter: str | None = None,
    note: str | None = None,
    hold_id: str | None = None,
) -> GrantState:
    """Add a grant of ``amount`` to ``st`` (journal entry included) under ``operation_id``: the
    one way every domain makes a grant (priority default, entries, metadata alike)."""
    g = GrantState(
        id=new_id("grt"),
        amount=amount,
        remaining=0,
        source=source,
        priority=DEFAULT_PRIORITY.get(source, 50) if priority is None else priority,
        effective_at=effective_at or now,
        expires_at=expires_at,
        created_at=now,
        meter=meter,
    )
    st.add_grant(g, now=now, operation_id=operation_id, hold_id=hold_id)
    meta[g.id] = {"operation_id": operation_id, "note": note}
    return g


# ------------------------------------------------------------------------------------ giving back
@dataclass(frozen=True, slots=True)
class GiveBack:
    """What a give-back did: how much of each drawn part it accounts for (``returned``, newest
    part first), and the new non-expiring ``refund`` grant made of what could not go back where
    it came from (None when everything did)."""

    returned: Draw
    new_grant: GrantState | None = None

    @property
    def unplaced(self) -> int:
        return 0 if self.new_grant is None else self.new_grant.amount


def give_back_hold(
    st: WalletState,
    meta: GrantMeta,
    held: Draw,
    amount: int,
    now: datetime,
    *,
    operation_id: str,
    hold_id: str,
) -> GiveBack:
    """Return ``amount`` of a hold (release, expiry, settling for less) to the grants it came from.

    Credits of a grant that has ended meanwhile go back to it and end again at once (they never
    become spendable). A part the hold took on the overdraft that was repaid since (a grant
    arrived) cannot go back to the overdraft: it becomes a new grant whose entries are tied to
    the hold, so the hold's entries still sum to what it kept and nothing is lost."""
    returned, unplaced = st.give_back(
        held, amount, now, kind=EntryKind.RELEASE, operation_id=operation_id, hold_id=hold_id, live_only=False
    )
    if not unplaced:
        return GiveBack(returned)
    g = new_grant(
        st,
        meta,
        amount=unplaced,
        source=GrantSource.REFUND,
        now=now,
        operation_id=operation_id,
        note=f"released from hold {hold_id}",
        hold_id=hold_id,
    )
    return GiveBack(returned, g)


def refund_left(drawn: Draw, earlier: Iterable[tuple[int, Draw | None]]) -> Draw:
    """What of a charge is left to refund, part by part, after its earlier refunds.

    ``drawn`` is what the charge took (from the journal: ``repository.draw_of``); ``earlier``
    is each earlier refund's amount, in order, with the attribution it recorded (rows written
    before refunds stopped recording one) or None. A refund accounts for the parts
    :func:`~tollkeep.ledger.domain.take_back` walks (the overdraft, then grants newest first),
    whether its credits went back to them or into a new grant: so an amount alone says which."""
    left = drawn
    for amount, recorded in earlier:
        left = subtract_draws(left, (recorded if recorded is not None else take_back(left, amount),))
    return left


def give_back_refund(
    st: WalletState,
    meta: GrantMeta,
    left: Draw,
    amount: int,
    now: datetime,
    *,
    operation_id: str,
    note: str | None = None,
) -> GiveBack:
    """Refund ``amount`` of what is ``left`` of a charge: back to the grants it drew from, newest
    part first, while they are live (a refund never revives an ended grant); the overdraft part
    back to the overdraft while it is owed; the rest as a new non-expiring ``refund`` grant."""
    returned, unplaced = st.give_back(
        left, amount, now, kind=EntryKind.REFUND, operation_id=operation_id, live_only=True
    )
    if not unplaced:
        return GiveBack(returned)
    g = new_grant(
        st, meta, amount=unplaced, source=GrantSource.REFUND, now=now, operation_id=operation_id, note=note
    )
    return GiveBack(returned, g)


# ------------------------------------------------------------------------------------ meters and caps
Counters = Mapping[str, tuple[Decimal, Decimal]]  # period key -> (value, allowance_used)
NO_ALLOWANCE = frozenset({GrantSource.PLAN_ALLOWANCE.value})
_ZERO = (Decimal(0), Decimal(0))


def check_caps(
    caps: Sequence[Cap],
    counters: Counters,
    now: datetime,
    *,
    meter: str,
    plan: str | None,
    is_max: bool,
    step: Decimal,
    reserved: Decimal = Decimal(0),
    enforce_hard: bool = True,
    sub: SubscriptionPeriods | None = None,
) -> frozenset[str]:
    """Apply a plan's caps on a meter to one event; returns the grant sources it may not draw.

    ``step`` is what the event adds (a ``max`` meter: its reading), ``reserved`` what open holds
    have reserved on the meter (a ``max`` meter: their largest reading). A hard cap refuses the
    event (``CapExceeded``, 429) when used + reserved + step would pass the limit (a ``max``
    meter: the largest of them); settling a hold does not enforce hard caps (``enforce_hard``
    False: its capacity was reserved when the hold was made). An allowance cap lets the event
    draw on the plan allowance only while what the allowance paid for, with this event, stays
    within the limit: past it, :data:`NO_ALLOWANCE`. A cap's period is
    :func:`~tollkeep.kit.clock.usage_period` (``sub``: the wallet's subscription periods)."""
    exclude: frozenset[str] = frozenset()
    for c in caps:
        _, end, key = usage_period(c.period, now, sub)
        used, allowance_used = counters.get(key, _ZERO)
        if c.mode == "hard":
            if enforce_hard:
                after = max(used, reserved, step) if is_max else used + reserved + step
                if after > c.limit:
                    raise CapExceeded(
                        f"meter {meter!r} is capped at {c.limit} per {c.period} on plan {plan!r}",
                        details={
                            "meter": meter,
                            "limit": str(c.limit),
                            "used": str(used),
                            "reserved": str(reserved),
                            "resets_at": iso(end),
                        },
                    )
            continue
        allowance_after = max(allowance_used, step) if is_max else allowance_used + step
        if allowance_after > c.limit:
            exclude = NO_ALLOWANCE
    return exclude


def counter_updates(
    counters: Counters,
    periods: Iterable[str],
    *,
    is_max: bool,
    quantity: Decimal,
    step: Decimal,
    used_allowance: bool,
) -> list[tuple[str, Decimal, Decimal, bool]]:
    """The meter's counters after an event: ``(period, value, allowance_used, existed)`` for each
    period (sorted). ``value`` adds ``step`` (a ``max`` meter keeps the period's largest
    reading); ``allowance_used`` grows the same way only when the plan allowance paid for it."""
    out = []
    for p in sorted(periods):
        old, allowance_used = counters.get(p, _ZERO)
        if is_max:
            new = max(old, quantity)
            au = max(allowance_used, quantity) if used_allowance else allowance_used
        else:
            new = old + step
            au = allowance_used + step if used_allowance else allowance_used
        out.append((p, new, au, p in counters))
    return out


# ---- per-key spend limits (ledger/keyspend.py reads and writes what these decide) -------------
class KeySpendLimitExceeded(InsufficientCredits):
    """402 ``key_spend_limit``: the API key's own spend limit (not the wallet) refuses the charge
    or hold; nothing was charged. Topping up the wallet does not help: the seller (or whoever
    minted the key) must raise the key's limit, or the next window must come."""

    code = "key_spend_limit"


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """A key's spend limits in ledger units (None: no limit): all time, per UTC day, per UTC
    month."""

    total: int | None = None
    daily: int | None = None
    monthly: int | None = None

    @property
    def any(self) -> bool:
        return self.total is not None or self.daily is not None or self.monthly is not None


@dataclass(frozen=True, slots=True)
class KeyUse:
    """What a key has spent plus what its open holds reserve, in each window of one day."""

    total: int = 0
    month: int = 0
    day: int = 0


def key_use(rows: Iterable[tuple[str, int]], day: str) -> KeyUse:
    """Fold a key's per-day rows ``(YYYY-MM-DD, spent + held)`` into its windows around ``day``:
    all of them, those of ``day``'s month, ``day``'s own."""
    total = month = today = 0
    ym = day[:7]
    for d, used in rows:
        total += used
        if d[:7] == ym:
            month += used
            if d == day:
                today += used
    return KeyUse(total, month, today)


def key_spend_refusal(limits: KeyLimits, use: KeyUse, amount: int) -> tuple[str, int, int] | None:
    """The first window (``total``, ``monthly``, ``daily``) whose limit ``amount`` more would pass,
    with that limit and what is used of it; None: admitted. Nothing (0) is always admitted,
    even past a limit lowered below what was already spent."""
    if amount <= 0:
        return None
    for window, limit, used in (
        ("total", limits.total, use.total),
        ("monthly", limits.monthly, use.month),
        ("daily", limits.daily, use.day),
    ):
        if limit is not None and used + amount > limit:
            return window, limit, used
    return None
