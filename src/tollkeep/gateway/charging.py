"""The HTTP gateway's calls into the ledger, in-process through the write executor.

Who is calling and whether they may (the key, its scope, the per-customer write limit and
whatever per-key limits come) is the shared seam's (:class:`tollkeep.gateway.core.Charger`:
``authenticate`` and ``admit``, the one gate both gateways pass). The holds are the shared
seam's too (``hold`` / ``settle`` / ``release`` / ``extend``); what this module adds is the HTTP
side: an ``Idempotency-Key`` retry of a call already charged is refused (from the replayed
hold's status), the top-up hint on a 402, a chain of holds for a stream settled part by part
with the token counts a tokens meter needs (``properties``). Resolutions are shielded from
cancellation: a hold is resolved whatever happens to the request that opened it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from tollkeep.gateway import core
from tollkeep.keys import Principal
from tollkeep.kit.errors import Conflict, Forbidden, InsufficientCredits, TollkeepError
from tollkeep.ratelimit import Permit
from tollkeep.runtime import Tollkeep

__all__ = ["Charger", "Held"]

log = logging.getLogger("tollkeep.gateway.http")


Held = core.Hold  # one open hold: its id, the integer amount it took, a replay's status


class Charger:
    """Key auth (the shared seam's), entitlements and holds for one runtime."""

    def __init__(
        self, tk: Tollkeep, *, hold_ttl: int, limit_writes: Callable[[str], None] | None = None
    ) -> None:
        self.tk = tk
        self.core = core.Charger(tk, limit_writes=limit_writes)
        self.hold_ttl = min(hold_ttl, tk.settings.hold_max_ttl_seconds)

    async def principal(self, headers: Mapping[bytes, bytes], ip: str | None) -> Principal:
        """The caller's key (``Authorization: Bearer`` or ``X-API-Key``) → its principal."""
        named = {
            name: value.decode("latin-1")
            for name in ("authorization", "x-api-key")
            if (value := headers.get(name.encode())) is not None
        }
        return await self.core.authenticate(named, ip)

    async def admit(self, p: Principal, target: str, price: int) -> Permit:
        """The one gate before anything is held (scope; allowlist, rate and in-flight limits):
        the shared seam's :meth:`~tollkeep.gateway.core.Charger.admit`. Give the permit back
        with :meth:`finish` when the call is over."""
        return await self.core.admit(p, target=target, price=price)

    async def finish(self, permit: Permit | None) -> None:
        await self.core.finish(permit)

    async def entitled(self, p: Principal, feature: str) -> None:
        """403 ``not_entitled`` unless the caller's plan has ``feature``."""
        plan_key = await self.core.plan_of(p.customer_id)
        plan = self.tk.catalog.plan(plan_key or "")
        if plan is None or not plan.has_feature(feature):
            raise Forbidden(
                f"this route needs the {feature!r} feature, which your plan does not include",
                code="not_entitled",
                details={"feature": feature, "plan": plan_key},
            )

    def topup(self, exc: TollkeepError) -> TollkeepError:
        if exc.code == "insufficient_credits" and "topup" not in exc.details:
            exc.details["topup"] = self.tk.topup_hint()
        return exc

    async def hold(
        self,
        p: Principal,
        key: str,
        *,
        amount: int | None = None,
        meter: str | None = None,
        quantity: Any = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Held:
        try:
            return await self.core.hold(
                p,
                amount,
                idempotency_key=key,
                meter=meter,
                quantity=quantity,
                properties=properties,
                ttl_seconds=self.hold_ttl,
            )
        except InsufficientCredits as exc:
            raise self.topup(exc) from None

    async def call_hold(self, p: Principal, prefix: str, idem_key: str | None, **kw: Any) -> tuple[Held, str]:
        """The hold of one call and the key it was made with. Without the caller's
        ``Idempotency-Key``: a fresh key. With one: a call already charged under it is refused
        (409 ``idempotency_key_used``), one still running too (409 ``request_in_progress``,
        whichever process runs it), one that was released is retried under a key derived from
        the released hold (so two retries racing still make one hold)."""
        if idem_key is None:
            key = f"{prefix}:{uuid.uuid4().hex}"
            return await self.hold(p, key, **kw), key
        key = f"{prefix}:idem:{idem_key}"
        for _ in range(8):
            held = await self.hold(p, key, **kw)
            if held.status == "open":
                if held.duplicate:
                    raise Conflict(
                        "a request with this Idempotency-Key is still running", code="request_in_progress"
                    )
                return held, key
            if held.status == "settled":
                raise Conflict(
                    "this Idempotency-Key was already used for a call that was charged; "
                    "send a new key to call again",
                    code="idempotency_key_used",
                    details={"hold_id": held.id},
                )
            key = f"{prefix}:idem:{idem_key}:after:{held.id}"
        raise Conflict("this Idempotency-Key was retried too often", code="idempotency_key_used")

    async def settle(
        self, p: Principal, held: Held, amount: int, properties: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.core.settle(held, amount=amount, properties=properties)

    async def release(self, p: Principal, held: Held) -> None:
        """Give a hold back; a failure is logged (the sweeper releases it at its expiry)."""
        try:
            await self.core.release(held)
        except TollkeepError as exc:
            log.warning("release of hold %s failed: %s %s", held.id, exc.code, exc.message)

    async def keep_open(self, p: Principal, holds: list[Held]) -> None:
        """Push the holds' expiry ``hold_ttl`` further (a stream longer than the TTL)."""
        for h in holds:
            try:
                await self.core.extend(h, self.hold_ttl)
            except TollkeepError as exc:
                log.warning("extending hold %s failed: %s %s", h.id, exc.code, exc.message)

    async def settle_parts(
        self, p: Principal, holds: list[Held], charge: int, properties: Mapping[str, Any] | None
    ) -> int:
        """Charge ``charge`` across a chain of holds (the first carries the meter and the
        counted ``properties``): each settles for what it can cover, in order, the rest are
        released. A charge above the whole chain draws the difference on the first hold when
        the wallet has it, else the chain's total is charged (never more than was held plus
        what the wallet can pay). Returns what was charged."""
        total = sum(h.amount for h in holds)
        extra = max(0, charge - total)
        left = min(charge, total)
        parts: list[tuple[Held, int]] = []
        for h in holds:
            part = min(left, h.amount)
            left -= part
            parts.append((h, part))
        first, first_part = parts[0]

        async def one(h: Held, part: int, props: Mapping[str, Any] | None) -> int:
            if part == 0 and props is None:
                await self.release(p, h)
                return 0
            try:
                await self.settle(p, h, part, props)
                return part
            except TollkeepError as exc:
                log.warning("settle of hold %s for %d failed: %s %s", h.id, part, exc.code, exc.message)
                await self.release(p, h)
                return 0

        async def head() -> int:
            if extra:
                try:
                    await self.settle(p, first, first_part + extra, properties)
                    return first_part + extra
                except InsufficientCredits:
                    pass  # the wallet has no more: the chain's total is what is charged
                except TollkeepError as exc:
                    log.warning("settle of hold %s failed: %s %s", first.id, exc.code, exc.message)
            return await one(first, first_part, properties or {})

        got = await asyncio.gather(head(), *(one(h, part, None) for h, part in parts[1:]))
        return sum(got)
