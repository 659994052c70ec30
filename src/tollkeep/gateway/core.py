"""The charging seam every gateway shares (MCP, HTTP): who is calling, may they, and
``hold → settle | release`` on the ledger, in-process through the executor.

A gateway call goes through five steps, each one method here:

1. :meth:`Charger.authenticate` — the raw key of a request (``Authorization: Bearer`` or
   ``X-API-Key``) → a :class:`~tollkeep.keys.Principal`, exactly as the ``/v1`` routes do it
   (cache, background refresh, status, expiry, IP allowlist). Server keys (``tk_sk_…``) are
   the seller's backend credentials, not an agent's: refused here.
2. :meth:`Charger.admit` — **the one place limits are checked** before anything is held: the
   key's scope, and the per-customer write rate limit (``TOLLKEEP_RATE_LIMIT_USAGE``). Per-key
   spend limits, tool allowlists, per-tool rate limits and concurrency caps plug in here.
3. :meth:`Charger.hold` — reserve the price (a :class:`Hold`); its idempotency key is derived
   from the call's (:func:`hold_key`), so a retried call never holds twice.
4. the gateway forwards the call upstream;
5. :meth:`Charger.settle` on a delivered success, :meth:`Charger.release` on anything else
   (an error, a cancel, a disconnect, a timeout). Both run shielded from cancellation, so a
   client that goes away mid-call cannot leave a hold open (the sweeper is the last resort).

Out of credits, a gateway answers with :func:`payment_error_data` (balance, price, top-up).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool

from tollkeep.keys import Principal
from tollkeep.kit.errors import AuthError, TollkeepError
from tollkeep.kit.executor import Command
from tollkeep.operators import SERVER_PREFIX
from tollkeep.ratelimit import Permit
from tollkeep.runtime import Tollkeep

__all__ = [
    "CHARGE_SCOPE",
    "Charger",
    "Hold",
    "hold_key",
    "payment_error_data",
    "raw_key",
]

MAX_HOLD_KEY = 255  # the ledger's idempotency keys
# the scope an agent key needs to spend through a gateway (a read-only key is refused)
CHARGE_SCOPE = "usage:write"


def raw_key(headers: Mapping[str, str]) -> str | None:
    """The API key of a request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
    (header names lower-case, as ASGI and Starlette give them); None when neither is sent."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("use 'Authorization: Bearer <api key>'", code="invalid_authorization")
        return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def hold_key(scope: str, call_key: str) -> str:
    """The idempotency key of the hold for one call: ``gw:<scope>:<call key>`` (the ledger
    dedupes holds per wallet and key, so the same call key never holds twice); a call key too
    long for the ledger's 255 characters is replaced by its SHA-256."""
    key = f"gw:{scope}:{call_key}"
    if len(key) <= MAX_HOLD_KEY:
        return key
    return f"gw:{scope}:sha256:{hashlib.sha256(call_key.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True)
class Hold:
    """An open reservation of ``amount`` credits for one call of ``customer_id``."""

    id: str
    customer_id: str
    amount: int
    duplicate: bool = False  # the answer of an earlier request with the same key
    meter: str | None = None
    status: str = "open"  # a replayed hold's: open, settled or released


def payment_error_data(tk: Tollkeep, exc: TollkeepError, price: int) -> dict[str, Any]:
    """What an agent needs when a call is refused for credits: the stable code, the balance
    (available credits), the price of the call and how to top up."""
    available = exc.details.get("available")
    return {
        "code": exc.code,
        "message": exc.message,
        "balance": available,
        "price": price,
        "unit": tk.catalog.credits.name,
        "topup": tk.topup_hint(),
    }


class Charger:
    """The ledger calls of a gateway, for one runtime. Async; database reads run off the loop.

    ``limit_writes``: the per-customer write limiter to count each charged call against (the
    app's ``Limiters.writes``), None for none."""

    def __init__(self, tk: Tollkeep, *, limit_writes: Callable[[str], None] | None = None) -> None:
        self.tk = tk
        self._limit_writes = limit_writes

    # ---- 1. who is calling ----------------------------------------------------------------
    async def authenticate(self, headers: Mapping[str, str], client_ip: str | None = None) -> Principal:
        """The agent's key from request headers → its principal. 401 ``missing_api_key``,
        ``invalid_api_key``, ``key_revoked``…; 403 ``customer_inactive``, ``ip_not_allowed``."""
        raw = raw_key(headers)
        if raw is None:
            raise AuthError(
                "send 'Authorization: Bearer <api key>' or 'X-API-Key: <api key>'", code="missing_api_key"
            )
        return await self.authenticate_key(raw, client_ip)

    async def authenticate_key(self, raw: str, client_ip: str | None = None) -> Principal:
        """A raw key → its principal, as ``api.deps.principal`` checks a buyer key."""
        if raw.startswith(SERVER_PREFIX):
            raise AuthError(
                "a server key (tk_sk_…) is the seller's credential: an agent calls with its own API key",
                code="invalid_api_key",
            )
        keys = self.tk.keys
        if not keys.well_formed(raw):
            raise AuthError("invalid API key", code="invalid_api_key")
        rec = keys.cached(raw)
        if rec is None:
            rec = await run_in_threadpool(keys.lookup, raw)
        elif keys.refresh_due(rec):
            asyncio.get_running_loop().run_in_executor(None, keys.refresh, raw, rec.key_id)
        return keys.check(raw, rec, client_ip)

    # ---- 2. may they ----------------------------------------------------------------------
    async def admit(self, caller: Principal, *, target: str, price: int) -> Permit:
        """The single gate before a call is held and forwarded (``target``: the tool
        ``server/tool`` or the route ``METHOD /path``): the charge scope, the key's tool / route
        allowlist (403 ``tool_not_allowed``), the per-customer write limit, and the key's rate
        limits and in-flight cap (``tk.limits``, scope ``tool:<target>`` or ``route:<target>``;
        429 ``rate_limited`` / ``concurrency_limited`` with ``retry_after``). Per-key spend
        limits are the ledger's, enforced in the hold's own transaction.

        Returns the permit holding the call's slot in flight: give it back with
        :meth:`finish` when the call is over (``finally``), exactly once."""
        caller.require(CHARGE_SCOPE)
        limits = self.tk.limits
        limits.require_tool(caller, target)
        if price > 0 and self._limit_writes is not None:
            self._limit_writes(caller.customer_id)
        kind = "route" if " " in target else "tool"
        return await limits.acquire(caller, f"{kind}:{target}")

    async def finish(self, permit: Permit | None) -> None:
        """Give back the slot in flight :meth:`admit` took (None: nothing was admitted)."""
        if permit is not None:
            await self.tk.limits.arelease(permit)

    # ---- 3. hold ----------------------------------------------------------------------------
    async def hold(
        self,
        caller: Principal,
        amount: int | None,
        *,
        idempotency_key: str,
        properties: Mapping[str, Any] | None = None,
        ttl_seconds: int | None = None,
        meter: str | None = None,
        quantity: Any = None,
        before: Callable[[Any], Any] | None = None,
        also: Callable[[Any, dict[str, Any]], Any] | None = None,
    ) -> Hold:
        """Reserve ``amount`` for a call (or, with ``meter`` and ``quantity`` and no amount, the
        meter's price of that quantity); 402 ``insufficient_credits`` when the wallet cannot
        cover it. ``before(tx)`` / ``also(tx, answer)``: the gateway's own work, committed in
        the same transaction, before and after the hold (a claimed idempotent call)."""
        cmd = self.tk.ledger.hold_fn(
            caller.customer_id,
            idempotency_key=idempotency_key,
            amount=amount if meter is None or quantity is None else None,
            meter=meter,
            quantity=quantity,
            properties=properties,
            ttl_seconds=ttl_seconds,
            api_key_id=caller.key_id,
        )
        if before is not None:
            cmd = _first(before, cmd)
        out = await self.tk.executor.acall(_then(cmd, also))
        return Hold(
            out["id"],
            caller.customer_id,
            int(out["amount"]),
            bool(out.get("duplicate")),
            meter,
            str(out.get("status", "open")),
        )

    async def extend(self, hold: Hold, ttl_seconds: int) -> None:
        """Keep a hold open ``ttl_seconds`` more (long calls, streams)."""
        cmd = self.tk.ledger.extend_fn(hold.customer_id, hold.id, ttl_seconds=ttl_seconds)
        await self.tk.executor.acall(cmd)

    # ---- 5. settle | release ----------------------------------------------------------------
    async def settle(
        self,
        hold: Hold,
        *,
        amount: int | None = None,
        quantity: Any = None,
        properties: Mapping[str, Any] | None = None,
        also: Callable[[Any, dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        """Charge the hold: its full amount, or ``amount``, or (a metered hold) the price of
        ``quantity`` rated now; shielded from cancellation. ``properties``: what the usage
        event records (a tokens meter's counts). ``also(tx, answer)``: work committed in the
        same transaction (the stored result of an idempotent call, so the charge and the
        replayable answer commit together)."""
        if amount is None and quantity is None:
            amount = hold.amount
        cmd = self.tk.ledger.resolve_fn(
            hold.customer_id,
            hold.id,
            action="settle",
            amount=amount,
            quantity=quantity,
            properties=properties,
        )
        return await _shielded(self.tk, _then(cmd, also))

    async def release(
        self, hold: Hold, *, also: Callable[[Any, dict[str, Any]], Any] | None = None
    ) -> dict[str, Any]:
        """Give the hold back, shielded from cancellation (a client that leaves mid-call
        releases its hold on the way out)."""
        cmd = self.tk.ledger.resolve_fn(hold.customer_id, hold.id, action="release")
        return await _shielded(self.tk, _then(cmd, also))

    # ---- reads ------------------------------------------------------------------------------
    async def plan_of(self, customer_id: str) -> str | None:
        """The customer's plan key (entitlements: its ``features``)."""
        view = await run_in_threadpool(self.tk.customers.get, customer_id)
        plan = view.get("plan")
        return plan if isinstance(plan, str) else None

    async def balance(self, customer_id: str) -> int | None:
        """The customer's available credits (None when the wallet cannot be read)."""
        try:
            out = await run_in_threadpool(self.tk.balance, customer_id)
        except TollkeepError:
            return None
        value = out.get("available")
        return value if isinstance(value, int) else None


async def _shielded(tk: Tollkeep, cmd: Command[dict[str, Any]]) -> dict[str, Any]:
    """Run ``cmd`` to its commit even if the caller is being cancelled (a hold is resolved
    whatever happens to the request that opened it)."""
    out: dict[str, Any] = {}
    with anyio.CancelScope(shield=True):
        out = await tk.executor.acall(cmd)
    return out


def _first(before: Callable[[Any], Any], cmd: Command[dict[str, Any]]) -> Command[dict[str, Any]]:
    """``before(tx)`` then ``cmd`` in the same unit of work (same executor key)."""
    then = cmd.fn

    def fn(s: Any) -> dict[str, Any]:
        before(s)
        return then(s)

    return Command(fn, cmd.key)


def _then(
    cmd: Command[dict[str, Any]], also: Callable[[Any, dict[str, Any]], Any] | None
) -> Command[dict[str, Any]]:
    """``cmd`` followed by ``also(tx, answer)`` in the same unit of work (same executor key)."""
    if also is None:
        return cmd
    first = cmd.fn

    def fn(s: Any) -> dict[str, Any]:
        out = first(s)
        also(s, out)
        return out

    return Command(fn, cmd.key)
