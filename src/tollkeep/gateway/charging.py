"""The HTTP gateway's calls into the ledger (in-process, through the write executor), and the
caller's key.

This is the HTTP side's own seam until the shared one (``gateway/core.py``) is merged; it
does exactly what the ``/v1`` routes do: the key is checked like ``api.deps.principal`` (a
buyer key as ``Authorization: Bearer`` or ``X-API-Key``), holds are ``ledger.hold_fn`` and
``ledger.resolve_fn`` run through ``executor.acall``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from tollkeep.keys import Principal
from tollkeep.kit.errors import AuthError, Forbidden, InsufficientCredits, TollkeepError
from tollkeep.runtime import Tollkeep

__all__ = ["Charger", "Held", "key_of"]

log = logging.getLogger("tollkeep.gateway.http")

SCOPE = "usage:write"  # a key that may spend (read-only keys are refused: 403 insufficient_scope)


def key_of(headers: Mapping[bytes, bytes]) -> str | None:
    """The caller's key: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("use 'Authorization: Bearer <api key>'", code="invalid_authorization")
        return value.strip()
    raw = headers.get(b"x-api-key")
    return raw.decode("latin-1").strip() if raw else None


@dataclass(frozen=True)
class Held:
    """One open hold: its id and the integer amount it took."""

    id: str
    amount: int
    status: str = "open"
    duplicate: bool = False  # the answer of an earlier request with the same key


class Charger:
    """Key auth, entitlements and holds for one runtime."""

    def __init__(self, tk: Tollkeep, *, hold_ttl: int) -> None:
        self.tk = tk
        self.hold_ttl = min(hold_ttl, tk.settings.hold_max_ttl_seconds)

    async def principal(self, headers: Mapping[bytes, bytes], ip: str | None) -> Principal:
        raw = key_of(headers)
        if raw is None:
            raise AuthError(
                "send your API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                code="missing_api_key",
            )
        keys = self.tk.keys
        if not keys.well_formed(raw):
            raise AuthError("invalid API key", code="invalid_api_key")
        rec = keys.cached(raw)
        if rec is None:
            rec = await run_in_threadpool(keys.lookup, raw)
        elif keys.refresh_due(rec):
            asyncio.get_running_loop().run_in_executor(None, keys.refresh, raw, rec.key_id)
        p = keys.check(raw, rec, ip)
        p.require(SCOPE)
        return p

    async def entitled(self, p: Principal, feature: str) -> None:
        """403 ``not_entitled`` unless the caller's plan has ``feature``."""
        customer = await run_in_threadpool(self.tk.customers.get, p.customer_id)
        plan = self.tk.catalog.plan(customer.get("plan") or "")
        if plan is None or not plan.has_feature(feature):
            raise Forbidden(
                f"this route needs the {feature!r} feature, which your plan does not include",
                code="not_entitled",
                details={"feature": feature, "plan": customer.get("plan")},
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
        properties: Mapping[str, Any] | None = None,
    ) -> Held:
        cmd = self.tk.ledger.hold_fn(
            p.customer_id,
            idempotency_key=key,
            amount=amount,
            meter=meter,
            properties=properties,
            ttl_seconds=self.hold_ttl,
            api_key_id=p.key_id,
        )
        try:
            out = await self.tk.ledger.executor.acall(cmd)
        except InsufficientCredits as exc:
            raise self.topup(exc) from None
        return Held(out["id"], int(out["amount"]), str(out["status"]), bool(out.get("duplicate")))

    async def settle(
        self, p: Principal, held: Held, amount: int, properties: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        cmd = self.tk.ledger.resolve_fn(
            p.customer_id, held.id, action="settle", amount=amount, properties=properties
        )
        out: dict[str, Any] = await self.tk.ledger.executor.acall(cmd)
        return out

    async def release(self, p: Principal, held: Held) -> None:
        """Give a hold back; a failure is logged (the sweeper releases it at its expiry)."""
        try:
            await self.tk.ledger.executor.acall(
                self.tk.ledger.resolve_fn(p.customer_id, held.id, action="release")
            )
        except TollkeepError as exc:
            log.warning("release of hold %s failed: %s %s", held.id, exc.code, exc.message)

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
