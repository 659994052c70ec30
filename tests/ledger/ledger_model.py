"""An independent model of a wallet, written from docs/ledger.md (not from the code): per-grant
credits, the overdraft, holds and charges. Used by the state machines of the real service
(test_service_state_machine.py) and of the pure rules (test_domain_properties.py).

Rules it encodes: spend order (priority, earliest expiry, never-expiring last, oldest); a debit
uses the overdraft last; a new unscoped live grant repays the overdraft first; returns go newest
part first (the overdraft part, then grants in reverse order); a refund goes back to a grant
only while it is live, a hold's unused credits go back to their grant even if it ended (and stay
ended); what cannot go back becomes a new non-expiring refund grant; a plan change ends the old
plan's allowance grants for good; a grant is dead at its exact ``expires_at``.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# the catalog's plans, written out for the model: (allowance, period, priority, free)
PLANS: dict[str, tuple[int, str, int, bool]] = {
    "basic": (20, "month", 10, False),
    "daily": (7, "day", 15, False),
    "free": (12, "day", 10, True),
}
PRIORITY = {"plan_allowance": 10, "promo": 20, "adjustment": 30, "refund": 40, "purchase": 50}
# journal kinds that move credits between grants, holds, charges and the overdraft; any other
# kind on a grant takes credits out of circulation (expire, plan change / close)
MOVES = {"grant", "repay", "debit", "hold", "release", "refund", "settle"}


def period(kind: str, now: datetime) -> tuple[datetime, datetime, str]:
    """The calendar period (UTC) around ``now``, written independently of kit.clock."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "day":
        return day, day + timedelta(days=1), f"{kind}:{day.date()}"
    first = day.replace(day=1)
    nxt = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return first, nxt, f"{kind}:{first.year}-{first.month}"


# ------------------------------------------------------------------------------------------ the model
@dataclass
class MGrant:
    key: str  # the real grant id once the service has created it
    source: str
    amount: int
    remaining: int
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime
    meter: str | None = None
    closed: bool = False  # ended by a plan change: never live again

    def live(self, now: datetime) -> bool:
        if self.closed or self.effective_at > now:
            return False
        return self.expires_at is None or now < self.expires_at  # dead at its exact expires_at

    def order(self) -> tuple[Any, ...]:
        far = datetime.max.replace(tzinfo=UTC)
        return (self.priority, self.expires_at is None, self.expires_at or far, self.created_at, self.key)


Parts = list[tuple[str | None, int]]  # (grant key, or None for the overdraft; amount), in draw order


@dataclass
class MHold:
    id: str
    amount: int
    meter: str | None
    quantity: int | None
    expires_at: datetime
    parts: Parts
    status: str = "open"
    resolution: tuple[Any, ...] | None = None
    charge: str | None = None


@dataclass
class MCharge:
    id: str
    amount: int
    created_at: datetime
    parts: Parts  # what is still attributable to refunds
    refunded: int = 0
    hold_id: str | None = None
    od_unplaced_at_settle: int = 0  # what issue 5 bug 1 got wrong


class Insufficient(Exception):
    pass


@dataclass
class Model:
    now: datetime
    grants: dict[str, MGrant] = field(default_factory=dict)
    od_used: int = 0
    od_limit: int = 0
    plan: str | None = None
    allowance_until: datetime | None = None
    allowances_given: set[str] = field(default_factory=set)
    carryover_done: bool = False
    carried: int = 0
    external: int = 0
    holds: dict[str, MHold] = field(default_factory=dict)
    charges: dict[str, MCharge] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)  # grants made by the current step (placeholders)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    # ---- reading
    def live_total(self) -> int:
        return sum(g.remaining for g in self.grants.values() if g.live(self.now))

    def balance(self) -> int:
        return self.live_total() - self.od_used

    def headroom(self) -> int:
        return max(0, self.od_limit - self.od_used)

    def held(self) -> int:
        return sum(h.amount for h in self.holds.values() if h.status == "open")

    def dead_total(self) -> int:
        return sum(g.remaining for g in self.grants.values() if not g.live(self.now))

    # ---- moves
    def add_grant(
        self,
        amount: int,
        source: str,
        *,
        priority: int | None = None,
        effective_at: datetime | None = None,
        expires_at: datetime | None = None,
        meter: str | None = None,
    ) -> MGrant:
        g = MGrant(
            key=f"new:{next(self.seq)}",
            source=source,
            amount=amount,
            remaining=amount,
            priority=PRIORITY[source] if priority is None else priority,
            effective_at=effective_at or self.now,
            expires_at=expires_at,
            created_at=self.now,
            meter=meter,
        )
        self.grants[g.key] = g
        self.new.append(g.key)
        if meter is None and g.live(self.now) and self.od_used:  # a new grant repays the overdraft
            repay = min(amount, self.od_used)
            g.remaining -= repay
            self.od_used -= repay
        return g

    def draw(self, amount: int, meter: str | None) -> Parts:
        usable = sorted(
            (
                g
                for g in self.grants.values()
                if g.remaining > 0 and g.live(self.now) and g.meter in (None, meter)
            ),
            key=MGrant.order,
        )
        parts: Parts = []
        left = amount
        for g in usable:
            if not left:
                break
            take = min(left, g.remaining)
            parts.append((g.key, take))
            left -= take
        if left > self.headroom():
            raise Insufficient
        for key, take in parts:
            self.grants[key].remaining -= take
        if left:
            self.od_used += left
            parts.append((None, left))
        return parts

    def give_back(self, parts: Parts, amount: int, *, to_dead: bool) -> tuple[Parts, int]:
        """Return ``amount`` of ``parts``, newest part first: the overdraft part, then grants in
        reverse order. The overdraft part repays what is still owed; a grant part goes back to
        its grant if it is live (refunds) or always (holds: credits of an ended grant stay
        ended). What cannot go back becomes a new non-expiring refund grant. Returns what of
        each part this return accounts for, and how much of the overdraft part could not go
        back to the overdraft."""
        left = amount
        taken: Parts = []
        unplaced = od_unplaced = 0
        od = sum(a for k, a in parts if k is None)
        if od and left:
            back = min(od, left)
            to_od = min(back, self.od_used)
            self.od_used -= to_od
            unplaced += back - to_od
            od_unplaced = back - to_od
            taken.append((None, back))
            left -= back
        for key, amt in reversed([(k, a) for k, a in parts if k is not None]):
            if not left:
                break
            back = min(amt, left)
            g = self.grants[key]  # type: ignore[index]
            if to_dead or g.live(self.now):
                g.remaining += back
            else:
                unplaced += back
            taken.append((key, back))
            left -= back
        assert left == 0
        if unplaced:
            self.add_grant(unplaced, "refund")
        return taken, od_unplaced

    def ensure_allowance(self) -> None:
        if self.plan is None or (self.allowance_until is not None and self.allowance_until > self.now):
            return
        amount, kind, priority, _ = PLANS[self.plan]
        start, end, key = period(kind, self.now)
        self.allowance_until = end
        if f"{self.plan}:{key}" in self.allowances_given:
            return
        self.allowances_given.add(f"{self.plan}:{key}")
        self.add_grant(amount, "plan_allowance", priority=priority, effective_at=start, expires_at=end)
        self.external += amount


def minus(parts: Parts, taken: Parts) -> Parts:
    left: dict[str | None, int] = {}
    for k, a in parts:
        left[k] = left.get(k, 0) + a
    for k, a in taken:
        left[k] -= a
    return [(k, left[k]) for k in dict.fromkeys(k for k, _ in parts) if left[k] > 0]


def merged(*all_parts: Parts) -> Parts:
    """Parts of several draws as one: grants in first-use order, the overdraft last."""
    total: dict[str | None, int] = {}
    for parts in all_parts:
        for k, a in parts:
            if k is not None:
                total[k] = total.get(k, 0) + a
    od = sum(a for parts in all_parts for k, a in parts if k is None)
    return [(k, a) for k, a in total.items()] + ([(None, od)] if od else [])


def copy_model(m: Model) -> Model:
    seq = m.seq
    m.seq = None  # type: ignore[assignment]
    try:
        out = copy.deepcopy(m)
    finally:
        m.seq = seq
    out.seq = seq
    return out
