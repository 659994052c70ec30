"""The asynchronous client: :class:`AsyncClient` and its :class:`AsyncHold` handle. The same
calls as :class:`tollkeep.client.Client`, awaited; see there for what each does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, Literal

import anyio
import httpx

from tollkeep.client import _core
from tollkeep.client._core import Quantity
from tollkeep.client.errors import ConnectionError as TkConnectionError
from tollkeep.client.errors import HoldNotSettled, TollkeepError
from tollkeep.client.models import (
    Balance,
    Charge,
    HoldState,
    KeyVerification,
    Pricing,
    Settlement,
    UsageEvent,
    UsagePage,
)

__all__ = ["AsyncClient", "AsyncHold", "PendingHold"]


class AsyncClient:
    """The async twin of :class:`tollkeep.client.Client` (same arguments; ``transport`` is an
    ``httpx.AsyncBaseTransport``, ``sleep`` an async function). ``async with`` it, or
    ``await aclose()``."""

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        server_key: bool | None = None,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._opts = _core.Options(
            base_url=base_url,
            key=key,
            server_mode=_core.is_server_key(key, server_key),
            timeout=timeout,
            policy=_core.RetryPolicy(retries, backoff, max_backoff, max_retry_after),
            headers=dict(headers or {}),
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(transport=transport, **self._opts.http_kwargs())
        self._owns_http = True

    @property
    def mode(self) -> Literal["server", "buyer"]:
        return "server" if self._opts.server_mode else "buyer"

    def with_key(self, key: str | None, *, server_key: bool | None = None) -> AsyncClient:
        """A client acting with another key over this one's connections. Closing it does
        nothing; close this one."""
        other = AsyncClient.__new__(AsyncClient)
        other._opts = self._opts.with_key(key, server_key)
        other._sleep = self._sleep
        other._http = self._http
        other._owns_http = False
        return other

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- the wire -------------------------------------------------------------------------
    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        policy = self._opts.policy
        headers = _core.auth_headers(self._opts.key)
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, json=json, params=query, headers=headers)
            except _core.RETRY_EXCEPTIONS as exc:
                delay = policy.after_exception(attempt)
                if delay is None:
                    raise TkConnectionError(
                        f"{method} {path}: {_core.describe(exc)} after {attempt + 1} attempt(s)",
                        idempotency_key=idempotency_key,
                    ) from exc
            except httpx.HTTPError as exc:
                raise TkConnectionError(
                    f"{method} {path}: {_core.describe(exc)}", idempotency_key=idempotency_key
                ) from exc
            else:
                data, error = _core.read_response(response, idempotency_key)
                if error is None:
                    return data
                delay = policy.after_error(attempt, error)
                if delay is None:
                    raise error
            await self._sleep(delay)
            attempt += 1

    # ---- the caller's wallet --------------------------------------------------------------
    async def balance(self, customer_id: str | None = None) -> Balance:
        _core.check_customer(self._opts.server_mode, customer_id, "balance")
        data = await self._request("GET", "/v1/balance", params={"customer_id": customer_id})
        return Balance.from_json(data)

    async def charge(
        self,
        meter: str,
        quantity: Quantity | None = None,
        *,
        idempotency_key: str | None = None,
        properties: Mapping[str, Any] | None = None,
        customer_id: str | None = None,
    ) -> Charge:
        _core.check_customer(self._opts.server_mode, customer_id, "charge")
        key = idempotency_key or _core.new_idempotency_key()
        body = _core.usage_body(meter, quantity, key, properties, customer_id)
        return Charge.from_json(await self._request("POST", "/v1/usage", json=body, idempotency_key=key), key)

    usage = charge

    async def list_usage(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        meter: str | None = None,
        customer_id: str | None = None,
    ) -> UsagePage:
        _core.check_customer(self._opts.server_mode, customer_id, "list_usage")
        params = {"limit": limit, "after": after, "meter": meter, "customer_id": customer_id}
        return UsagePage.from_json(await self._request("GET", "/v1/usage", params=params))

    async def iter_usage(
        self, *, meter: str | None = None, customer_id: str | None = None, page_size: int = 100
    ) -> AsyncIterator[UsageEvent]:
        after: str | None = None
        while True:
            page = await self.list_usage(limit=page_size, after=after, meter=meter, customer_id=customer_id)
            for event in page.data:
                yield event
            if not page.next:
                return
            after = page.next

    async def pricing(self) -> Pricing:
        return Pricing.from_json(await self._request("GET", "/v1/pricing"))

    # ---- holds ----------------------------------------------------------------------------
    def hold(
        self,
        amount: int | None = None,
        *,
        meter: str | None = None,
        quantity: Quantity | None = None,
        properties: Mapping[str, Any] | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
        customer_id: str | None = None,
    ) -> PendingHold:
        """``h = await client.hold(...)``, or ``async with client.hold(...) as h:`` (which
        releases on an exception, see :class:`AsyncHold`). The idempotency key is fixed here,
        so awaiting twice makes one hold."""
        _core.check_customer(self._opts.server_mode, customer_id, "hold")
        key = idempotency_key or _core.new_idempotency_key()
        body = _core.hold_body(
            amount=amount,
            meter=meter,
            quantity=quantity,
            properties=properties,
            ttl_seconds=ttl_seconds,
            idempotency_key=key,
            customer_id=customer_id,
        )
        return PendingHold(self, body, key)

    async def _create_hold(self, body: dict[str, Any], key: str) -> AsyncHold:
        state = HoldState.from_json(await self._request("POST", "/v1/holds", json=body, idempotency_key=key))
        return AsyncHold(self, state, key)

    async def get_hold(self, hold_id: str) -> HoldState:
        return HoldState.from_json(await self._request("GET", _core.hold_path(hold_id)))

    async def settle_hold(
        self,
        hold_id: str,
        amount: int | None = None,
        quantity: Quantity | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Settlement:
        body = _core.settle_body(amount, quantity, properties)
        return Settlement.from_json(
            await self._request("POST", _core.hold_path(hold_id, "settle"), json=body)
        )

    async def release_hold(self, hold_id: str) -> Settlement:
        return Settlement.from_json(await self._request("POST", _core.hold_path(hold_id, "release")))

    async def extend_hold(self, hold_id: str, ttl_seconds: int) -> HoldState:
        body = {"ttl_seconds": ttl_seconds}
        return HoldState.from_json(await self._request("POST", _core.hold_path(hold_id, "extend"), json=body))

    # ---- server keys ----------------------------------------------------------------------
    async def verify_key(self, buyer_key: str, charge: Mapping[str, Any] | None = None) -> KeyVerification:
        if not self._opts.server_mode:
            raise ValueError("verify_key needs a server key (tk_sk_…)")
        body = _core.verify_body(buyer_key, charge)
        key = body["charge"]["idempotency_key"] if body["charge"] else None
        data = await self._request("POST", "/v1/keys/verify", json=body, idempotency_key=key)
        return KeyVerification.from_json(data)


class PendingHold:
    """What :meth:`AsyncClient.hold` returns: await it for the :class:`AsyncHold`, or use it
    with ``async with`` (the hold is made on entry)."""

    def __init__(self, client: AsyncClient, body: dict[str, Any], idempotency_key: str) -> None:
        self._client = client
        self._body = body
        self.idempotency_key = idempotency_key
        self._hold: AsyncHold | None = None

    def __await__(self) -> Generator[Any, None, AsyncHold]:
        return self._client._create_hold(self._body, self.idempotency_key).__await__()

    async def __aenter__(self) -> AsyncHold:
        self._hold = await self._client._create_hold(self._body, self.idempotency_key)
        return self._hold

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._hold is not None
        await self._hold.__aexit__(exc_type, exc, tb)


class AsyncHold:
    """The async twin of :class:`tollkeep.client.Hold`: ``await h.settle(...)``,
    ``await h.release()``; ``async with`` releases on an exception and raises
    :class:`~tollkeep.client.errors.HoldNotSettled` (after releasing) when the block ends
    without either."""

    def __init__(self, client: AsyncClient, state: HoldState, idempotency_key: str) -> None:
        self._client = client
        self.state = state
        self.idempotency_key = idempotency_key
        self.settlement: Settlement | None = None

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def amount(self) -> int:
        return self.state.amount

    @property
    def resolved(self) -> bool:
        return self.settlement is not None

    async def settle(
        self,
        amount: int | None = None,
        quantity: Quantity | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Settlement:
        self.settlement = await self._client.settle_hold(self.id, amount, quantity, properties)
        return self.settlement

    async def release(self) -> Settlement:
        self.settlement = await self._client.release_hold(self.id)
        return self.settlement

    async def extend(self, ttl_seconds: int) -> HoldState:
        self.state = await self._client.extend_hold(self.id, ttl_seconds)
        return self.state

    async def refresh(self) -> HoldState:
        self.state = await self._client.get_hold(self.id)
        return self.state

    async def __aenter__(self) -> AsyncHold:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.settlement is not None:
            return
        if exc is not None:
            try:
                await self.release()
            except TollkeepError as failed:
                exc.add_note(
                    f"tollkeep: releasing hold {self.id} failed too ({failed}); it expires by itself"
                )
            return
        await self.release()
        raise HoldNotSettled(self.id)

    def __repr__(self) -> str:
        status = self.settlement.status if self.settlement else self.state.status
        return f"AsyncHold(id={self.id!r}, amount={self.amount}, status={status!r})"
