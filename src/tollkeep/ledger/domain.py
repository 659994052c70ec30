"""The ledger's rules, pure: no database, no web framework, no clock of its own.

A :class:`WalletState` holds a wallet's grants (credit lots) and overdraft.
Every change goes through one of its methods, which mutate the state *and*
append the journal :class:`Entry` that explains the change, so the journal
always sums to the balances. The service loads a WalletState from the
database, calls these methods, and writes back what they changed; the
property tests drive the very same methods with random sequences.

Spend order: lower ``priority`` first, then earliest expiry (never-expiring
last), then oldest, then id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tollkeep.kit.errors import IdempotencyConflict, InsufficientCredits, InvalidInput
from tollkeep.ledger.kinds import GrantSource

__all__ = [
    "DEFAULT_PRIORITY",
    "SOURCES",
    "Draw",
    "Entry",
    "GrantState",
    "WalletState",
    "check_replay",
    "merge_draws",
    "request_hash",
    "spend_order",
    "subtract_draws",
    "take_back",
]

_NEVER = datetime.min.replace(tzinfo=UTC)  # placeholder expiry of grants that never expire
SOURCES = tuple(GrantSource)
DEFAULT_PRIORITY = {"plan_allowance": 10, "promo": 20, "adjustment": 30, "refund": 40, "purchase": 50}


@dataclass
class GrantState:
    id: str
    amount: int
    remaining: int
    source: str
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    created_at: datetime
    meter: str | None = None
    closed_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Spendable at ``now``: in effect, not expired (dead at its exact ``expires_at``), not closed."""
        return (
            self.closed_at is None
            and self.effective_at <= now
            and (self.expires_at is None or self.expires_at > now)
        )

    def ended(self, now: datetime) -> str | None:
        """Why the grant is over for good at ``now`` (``"close"`` or ``"expire"``), or None.
        Credits returned to an ended grant end again in the same operation (see give_back)."""
        if self.closed_at is not None:
            return "close"
        if self.expires_at is not None and self.expires_at <= now:
            return "expire"
        return None

    def usable_for(self, now: datetime, meter: str | None, exclude: frozenset[str]) -> bool:
        return (
            self.remaining > 0
            and self.live(now)
            and (self.meter is None or self.meter == meter)
            and self.source not in exclude
        )


def spend_order(grant: GrantState) -> tuple[Any, ...]:
    """The key grants are spent in; the database's spend-order index sorts the same way."""
    return (
        grant.priority,
        grant.expires_at is None,
        grant.expires_at or _NEVER,
        grant.created_at,
        grant.id,
    )


@dataclass(frozen=True)
class Entry:
    """One journal line: ``delta`` applied to a grant's remaining, or (grant_id None) to the
    wallet's overdraft position (negative draws on the overdraft, positive repays it)."""

    grant_id: str | None
    delta: int
    kind: str
    operation_id: str
    hold_id: str | None = None


@dataclass(frozen=True)
class Draw:
    parts: tuple[tuple[str, int], ...]
    overdraft: int = 0

    @property
    def total(self) -> int:
        return sum(a for _, a in self.parts) + self.overdraft

    def sources(self, grants: Mapping[str, GrantState]) -> set[str]:
        return {grants[g].source for g, _ in self.parts if g in grants}

    def to_json(self) -> dict[str, Any]:
        return {"parts": [list(p) for p in self.parts], "overdraft": self.overdraft}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Draw:
        return cls(tuple((str(g), int(a)) for g, a in data.get("parts", [])), int(data.get("overdraft", 0)))


@dataclass
class WalletState:
    """A wallet's overdraft and its grants with credits (all of them, or a spend-order prefix).

    ``credits`` is the sum of ``remaining`` over *all* the wallet's grants, live or not, loaded
    or not (stored as ``wallets.credits``, kept by every move). Before ``live_until`` every grant
    holding credits is live, so the balance is ``credits - overdraft_used`` (stored as
    ``wallets.live_until``: a grant that gets credits lowers it to its expiry, or clears it when
    not live; the loader sets it again from the grants).

    A wallet with many grants with credits is loaded *partial*: only a prefix of them in spend
    order, up to the grant whose :func:`spend_order` key is ``horizon`` (plus any grants named
    by id, such as those a hold drew from, and grants added in memory). Every grant with credits
    that is not loaded comes after the horizon, so a draw that the grants up to the horizon
    :meth:`covers` takes exactly what it would take with every grant loaded; the loader reads
    further pages until they do, or until everything is read (``horizon`` None: not partial,
    as for a wallet with few grants). :meth:`balance`, :meth:`spendable` and :meth:`expire`
    need every grant and refuse a partial state: its balance comes from ``credits``."""

    wallet_id: str
    overdraft_limit: int = 0
    overdraft_used: int = 0
    grants: dict[str, GrantState] = field(default_factory=dict)
    credits: int = 0
    live_until: datetime | None = None  # every grant with credits is live before this (None: unknown)
    horizon: tuple[Any, ...] | None = None
    spend_read: int = 0  # rows the spend-order read has returned (the loader's page offset)
    entries: list[Entry] = field(default_factory=list)
    new_grants: list[str] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)
    overdraft_dirty: bool = False

    @property
    def partial(self) -> bool:
        return self.horizon is not None

    def _need_all(self, what: str) -> None:
        if self.horizon is not None:
            raise AssertionError(f"{what} of a partially loaded wallet")

    # ---- reading -------------------------------------------------------------------------
    def spendable(
        self, now: datetime, meter: str | None = None, exclude: frozenset[str] = frozenset()
    ) -> int:
        self._need_all("spendable()")
        return sum(g.remaining for g in self.grants.values() if g.usable_for(now, meter, exclude))

    def covers(
        self, amount: int, now: datetime, meter: str | None = None, exclude: frozenset[str] = frozenset()
    ) -> bool:
        """Whether a draw of ``amount`` is decided by the grants loaded: always when every grant
        is loaded; in a partial state, when the usable grants up to the horizon cover it."""
        if self.horizon is None:
            return True
        horizon = self.horizon
        got = 0
        for g in self.grants.values():
            if g.usable_for(now, meter, exclude) and spend_order(g) <= horizon:
                got += g.remaining
                if got >= amount:
                    return True
        return amount <= 0

    def note_funded(self, grant: GrantState, now: datetime) -> None:
        """``grant`` holds credits now (new, or refilled): ``live_until`` holds no longer than it."""
        if self.live_until is None:
            return
        if not grant.live(now):
            self.live_until = None
        elif grant.expires_at is not None and grant.expires_at < self.live_until:
            self.live_until = grant.expires_at

    def balance(self, now: datetime) -> int:
        """Credits of live grants (any meter scope) less what the overdraft owes."""
        self._need_all("balance()")
        return sum(g.remaining for g in self.grants.values() if g.live(now)) - self.overdraft_used

    def headroom(self) -> int:
        return max(0, self.overdraft_limit - self.overdraft_used)

    def available(
        self, now: datetime, meter: str | None = None, exclude: frozenset[str] = frozenset()
    ) -> int:
        """The most a charge could draw now: usable credits plus the overdraft headroom. The one
        definition behind both ``available`` in a balance and ``available`` in a 402."""
        return self.spendable(now, meter, exclude) + self.headroom()

    # ---- primitive moves (each writes its journal entry) -----------------------------------
    def _move(self, grant_id: str | None, delta: int, kind: str, op: str, hold: str | None) -> None:
        if delta == 0:
            return
        if grant_id is None:
            self.overdraft_used -= delta
            self.overdraft_dirty = True
            if self.overdraft_used < 0:
                raise AssertionError("overdraft position below zero")
        else:
            g = self.grants[grant_id]
            g.remaining += delta
            if g.remaining < 0:
                raise AssertionError("grant remaining below zero")
            self.credits += delta
            self.dirty.add(grant_id)
        self.entries.append(Entry(grant_id, delta, kind, op, hold))

    # ---- commands ----------------------------------------------------------------------------
    def add_grant(
        self, grant: GrantState, *, now: datetime, operation_id: str, hold_id: str | None = None
    ) -> int:
        """Add a credit lot. An unscoped grant effective now first repays any overdraft.
        Returns the amount used to repay. ``hold_id`` ties the grant's entries to a hold (credits
        a released hold could not put back where they came from)."""
        if grant.amount <= 0:
            raise InvalidInput("a grant amount must be a positive integer", code="invalid_amount")
        if grant.source not in SOURCES:
            raise InvalidInput(f"unknown grant source {grant.source!r}", code="invalid_source")
        if grant.id in self.grants:
            raise AssertionError("grant id reused")
        grant.remaining = 0
        self.grants[grant.id] = grant
        self.new_grants.append(grant.id)
        self._move(grant.id, grant.amount, "grant", operation_id, hold_id)
        repay = 0
        if self.overdraft_used > 0 and grant.meter is None and grant.live(now):
            repay = min(grant.amount, self.overdraft_used)
            self._move(grant.id, -repay, "repay", operation_id, hold_id)
            self._move(None, repay, "repay", operation_id, hold_id)
        return repay

    def plan_draw(
        self,
        amount: int,
        now: datetime,
        *,
        meter: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Draw:
        if amount < 0:
            raise InvalidInput("amount must not be negative", code="invalid_amount")
        if self.horizon is not None and not self.covers(amount, now, meter, exclude):
            raise AssertionError("a draw on a partially loaded wallet that its grants do not cover")
        parts: list[tuple[str, int]] = []
        left = amount
        for g in sorted(
            (g for g in self.grants.values() if g.usable_for(now, meter, exclude)), key=spend_order
        ):
            if left == 0:
                break
            take = min(g.remaining, left)
            parts.append((g.id, take))
            left -= take
        if left > self.headroom():
            available = self.available(now, meter, exclude)
            raise InsufficientCredits(
                f"needs {amount}, only {available} available",
                details={"required": amount, "available": available},
            )
        return Draw(tuple(parts), left)

    def draw(
        self,
        amount: int,
        now: datetime,
        *,
        kind: str,
        operation_id: str,
        hold_id: str | None = None,
        meter: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Draw:
        """Take ``amount`` in spend order (overdraft last). Raises InsufficientCredits, changing nothing."""
        plan = self.plan_draw(amount, now, meter=meter, exclude=exclude)
        for gid, take in plan.parts:
            self._move(gid, -take, kind, operation_id, hold_id)
        if plan.overdraft:
            self._move(None, -plan.overdraft, kind, operation_id, hold_id)
        return plan

    def claw_back(self, amount: int, now: datetime, *, operation_id: str, first: str | None = None) -> int:
        """Take up to ``amount`` live credits back (a refunded payment's): from grant ``first``
        (the one the payment bought) before any other, then in spend order whatever their meter
        scope, then the overdraft headroom - never past the overdraft limit and never credits an
        open hold has reserved. Returns what was taken; the rest is the caller's shortfall."""
        self._need_all("claw_back()")
        if amount < 0:
            raise InvalidInput("amount must not be negative", code="invalid_amount")
        left = amount
        live = [g for g in self.grants.values() if g.live(now) and g.remaining > 0]
        for g in sorted(live, key=lambda g: (g.id != first, spend_order(g))):
            if left == 0:
                break
            take = min(g.remaining, left)
            self._move(g.id, -take, "clawback", operation_id, None)
            left -= take
        from_overdraft = min(left, self.headroom())
        if from_overdraft:
            self._move(None, -from_overdraft, "clawback", operation_id, None)
            left -= from_overdraft
        return amount - left

    def give_back(
        self,
        drawn: Draw,
        amount: int,
        now: datetime,
        *,
        kind: str,
        operation_id: str,
        hold_id: str | None = None,
        live_only: bool,
    ) -> tuple[Draw, int]:
        """Return ``amount`` of an earlier draw, newest part first (the overdraft, then grants in
        reverse spend order).

        A part whose grant has ended (expired or closed) never becomes spendable again. With
        ``live_only`` (refunds) it is not returned to that grant; the remainder is given back to
        the caller, who makes a new grant of it. Without (a hold's unused credits) it goes back
        to its grant and ends again at once, in the same operation, with an ``expire`` or
        ``close`` entry: released credits of an ended grant are gone, as they would have been
        had they never been held.

        Returns (the attribution: how much of each drawn part this return accounts for,
        the amount that could not go back)."""
        if amount < 0 or amount > drawn.total:
            raise InvalidInput("cannot give back more than was drawn", code="invalid_amount")
        back = take_back(drawn, amount)
        unplaced = 0
        if back.overdraft:
            to_overdraft = min(back.overdraft, self.overdraft_used)
            self._move(None, to_overdraft, kind, operation_id, hold_id)
            unplaced += back.overdraft - to_overdraft
        for gid, amt in back.parts:
            g = self.grants.get(gid)
            ended = None if g is None else g.ended(now)
            if g is not None and (not live_only or ended is None):
                self._move(gid, amt, kind, operation_id, hold_id)
                if ended is not None:  # the grant ends again: not the hold's doing, so untied
                    self._move(gid, -amt, ended, operation_id, None)
            else:
                unplaced += amt
        return back, unplaced

    def close(self, grant_id: str, now: datetime, *, kind: str, operation_id: str) -> int:
        """End a grant for good (plan change, manual close): what is left leaves use, and credits
        returned to it later (a hold released) end at once. Returns what was left."""
        g = self.grants[grant_id]
        left = g.remaining
        g.closed_at = now
        self.dirty.add(grant_id)
        self._move(grant_id, -left, kind, operation_id, None)
        return left

    def expire(self, now: datetime, *, operation_id: str) -> list[tuple[str, int]]:
        """Zero every grant that has expired with credits left. Returns (grant, amount) pairs."""
        self._need_all("expire()")
        out = []
        for g in sorted(self.grants.values(), key=spend_order):
            if g.remaining > 0 and g.expires_at is not None and g.expires_at <= now:
                out.append((g.id, g.remaining))
                self._move(g.id, -g.remaining, "expire", operation_id, None)
        return out

    # ---- checking ----------------------------------------------------------------------------
    def check(self) -> None:
        if self.overdraft_used < 0 or self.overdraft_used > max(self.overdraft_limit, self.overdraft_used):
            raise AssertionError("overdraft out of range")
        for g in self.grants.values():
            if not 0 <= g.remaining <= g.amount:
                raise AssertionError(f"grant {g.id} remaining {g.remaining} outside 0..{g.amount}")


def take_back(drawn: Draw, amount: int) -> Draw:
    """Which parts of ``drawn`` a return of ``amount`` accounts for, newest part first: the
    overdraft, then grants in reverse spend order. The walk of :meth:`WalletState.give_back`
    (it depends on nothing else), so returns add up: taking ``a`` then ``b`` from what is left
    accounts for the same parts as taking ``a + b`` at once."""
    left = amount
    od = min(drawn.overdraft, left)
    left -= od
    parts: list[tuple[str, int]] = []
    for gid, took in reversed(drawn.parts):
        if left == 0:
            break
        back = min(took, left)
        parts.append((gid, back))
        left -= back
    return Draw(tuple(parts), od)


def subtract_draws(drawn: Draw, returned: Iterable[Draw]) -> Draw:
    """What of ``drawn`` has not yet been accounted for by earlier returns."""
    left = dict(drawn.parts)
    od = drawn.overdraft
    for r in returned:
        od -= r.overdraft
        for gid, amt in r.parts:
            left[gid] = left.get(gid, 0) - amt
    return Draw(tuple((g, left[g]) for g, _ in drawn.parts if left.get(g, 0) > 0), max(od, 0))


def merge_draws(*draws: Draw) -> Draw:
    """One draw made of several (a hold plus the extra taken at settle), grants in first-use order."""
    totals: dict[str, int] = {}
    for d in draws:
        for gid, amt in d.parts:
            totals[gid] = totals.get(gid, 0) + amt
    return Draw(tuple((g, a) for g, a in totals.items() if a > 0), sum(d.overdraft for d in draws))


_PLAIN = (str, int, bool, type(None))


def _canon(value: Any) -> Any:
    if type(value) in _PLAIN:  # the common case first: no ABC checks
        return value
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return format(Decimal(repr(value)).normalize(), "f")
    if isinstance(value, dict | Mapping):
        return {str(k): _canon(v) for k, v in value.items()}  # json.dumps sorts the keys
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def request_hash(payload: Mapping[str, Any]) -> str:
    """A stable fingerprint of a command's payload, to tell a replay from a key reused."""
    text = json.dumps(_canon(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def check_replay(stored_hash: str | None, new_hash: str, key: str) -> None:
    if stored_hash != new_hash:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used with a different request",
            details={"idempotency_key": key},
        )
