"""The synchronous client: :class:`Client` and its :class:`Hold` handle."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal

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

__all__ = ["Client", "Hold"]


class Client:
    """A client of one tollkeep server, acting with one key.

    * buyer-key mode (``tk_live_…``): every call acts as the key's own customer;
    * server-key mode (``tk_sk_…``, or ``server_key=True``): the seller's backend; calls that
      act for a customer take ``customer_id``, and :meth:`verify_key` checks a buyer's key.

    Writes carry an idempotency key (generated when not given) and every retry of a call
    sends the same one, so retrying a charge is safe. Errors are :mod:`tollkeep.client.errors`.
    Use it as a context manager, or :meth:`close` it.
    """

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        server_key: bool | None = None,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
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
        self._http = httpx.Client(transport=transport, **self._opts.http_kwargs())
        self._owns_http = True

    @property
    def mode(self) -> Literal["server", "buyer"]:
        return "server" if self._opts.server_mode else "buyer"

    def with_key(self, key: str | None, *, server_key: bool | None = None) -> Client:
        """A client acting with another key over this one's connections (say, a caller's key
        in a request handler). Closing it does nothing; close this one."""
        other = Client.__new__(Client)
        other._opts = self._opts.with_key(key, server_key)
        other._sleep = self._sleep
        other._http = self._http
        other._owns_http = False
        return other

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the wire -------------------------------------------------------------------------
    def _request(
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
                response = self._http.request(method, path, json=json, params=query, headers=headers)
            except _core.RETRY_EXCEPTIONS as exc:
                delay = policy.after_exception(attempt)
                if delay is None:
                    raise TkConnectionError(
                        f"{method} {path}: {_core.describe(exc)} after {attempt + 1} attempt(s)",
                        idempotency_key=idempotency_key,
                    ) from exc
            except httpx.HTTPError as exc:  # not a passing fault (a bad URL, a proxy refusing): no retry
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
            self._sleep(delay)
            attempt += 1

    # ---- the caller's wallet --------------------------------------------------------------
    def balance(self, customer_id: str | None = None) -> Balance:
        """``GET /v1/balance`` (server keys: of ``customer_id``)."""
        _core.check_customer(self._opts.server_mode, customer_id, "balance")
        return Balance.from_json(self._request("GET", "/v1/balance", params={"customer_id": customer_id}))

    def charge(
        self,
        meter: str,
        quantity: Quantity | None = None,
        *,
        idempotency_key: str | None = None,
        properties: Mapping[str, Any] | None = None,
        customer_id: str | None = None,
    ) -> Charge:
        """Record usage of ``meter`` and charge for it (``POST /v1/usage``). Without an
        ``idempotency_key`` one is generated; pass your own (a request id, a job id) to make
        your own retries safe too. 402 :class:`~tollkeep.client.errors.InsufficientCredits`
        when the wallet cannot cover it (nothing charged)."""
        _core.check_customer(self._opts.server_mode, customer_id, "charge")
        key = idempotency_key or _core.new_idempotency_key()
        body = _core.usage_body(meter, quantity, key, properties, customer_id)
        return Charge.from_json(self._request("POST", "/v1/usage", json=body, idempotency_key=key), key)

    usage = charge  # the same call, named after its route

    def list_usage(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        meter: str | None = None,
        customer_id: str | None = None,
    ) -> UsagePage:
        """One page of charges, newest first (``GET /v1/usage``)."""
        _core.check_customer(self._opts.server_mode, customer_id, "list_usage")
        params = {"limit": limit, "after": after, "meter": meter, "customer_id": customer_id}
        return UsagePage.from_json(self._request("GET", "/v1/usage", params=params))

    def iter_usage(
        self, *, meter: str | None = None, customer_id: str | None = None, page_size: int = 100
    ) -> Iterator[UsageEvent]:
        """Every charge, newest first, page after page."""
        after: str | None = None
        while True:
            page = self.list_usage(limit=page_size, after=after, meter=meter, customer_id=customer_id)
            yield from page.data
            if not page.next:
                return
            after = page.next

    def pricing(self) -> Pricing:
        """``GET /v1/pricing``: the active catalog's meters, prices and plans."""
        return Pricing.from_json(self._request("GET", "/v1/pricing"))

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
    ) -> Hold:
        """Reserve credits now (``POST /v1/holds``): an ``amount``, or the price of an
        estimated ``quantity`` of ``meter`` (for a tokens meter: the estimated token counts
        in ``properties``). Settle or release the returned :class:`Hold`; as a context
        manager it releases on an exception (see :class:`Hold`)."""
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
        state = HoldState.from_json(self._request("POST", "/v1/holds", json=body, idempotency_key=key))
        return Hold(self, state, key)

    def get_hold(self, hold_id: str) -> HoldState:
        return HoldState.from_json(self._request("GET", _core.hold_path(hold_id)))

    def settle_hold(
        self,
        hold_id: str,
        amount: int | None = None,
        quantity: Quantity | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Settlement:
        """Charge a hold (``POST /v1/holds/{id}/settle``). The same settle sent again answers
        the first result, so it is retried like a charge."""
        body = _core.settle_body(amount, quantity, properties)
        return Settlement.from_json(self._request("POST", _core.hold_path(hold_id, "settle"), json=body))

    def release_hold(self, hold_id: str) -> Settlement:
        """Give a hold's credits back without charging (``POST /v1/holds/{id}/release``)."""
        return Settlement.from_json(self._request("POST", _core.hold_path(hold_id, "release")))

    def extend_hold(self, hold_id: str, ttl_seconds: int) -> HoldState:
        """Keep an open hold longer (``POST /v1/holds/{id}/extend``): it now expires
        ``ttl_seconds`` from now (never earlier than it did). Safe to send again."""
        body = {"ttl_seconds": ttl_seconds}
        return HoldState.from_json(self._request("POST", _core.hold_path(hold_id, "extend"), json=body))

    # ---- server keys ----------------------------------------------------------------------
    def verify_key(self, buyer_key: str, charge: Mapping[str, Any] | None = None) -> KeyVerification:
        """Server keys: is ``buyer_key`` valid, whose is it, and (with ``charge``, a
        ``POST /v1/usage`` body: ``meter``, ``quantity``, ``properties``,
        ``idempotency_key`` — generated when missing) charge it in the same call
        (``POST /v1/keys/verify``). An invalid key is ``valid=False`` with its ``code``."""
        if not self._opts.server_mode:
            raise ValueError("verify_key needs a server key (tk_sk_…)")
        body = _core.verify_body(buyer_key, charge)
        key = body["charge"]["idempotency_key"] if body["charge"] else None
        return KeyVerification.from_json(
            self._request("POST", "/v1/keys/verify", json=body, idempotency_key=key)
        )


class Hold:
    """A hold made by :meth:`Client.hold`: ``settle()`` charges it, ``release()`` gives its
    credits back. Each resolves it once; the server's answer is kept in ``settlement``.

    As a context manager::

        with client.hold(meter="llm_tokens", properties=estimate) as h:
            answer = generate()
            h.settle(properties=answer.usage)

    * an exception inside the block releases the hold (nothing is charged) and propagates;
    * a block that ends without ``settle()`` or ``release()`` releases the hold too, then
      raises :class:`~tollkeep.client.errors.HoldNotSettled`: leaving the block never charges
      silently, and never silently forgets to;
    * after ``settle()`` or ``release()`` the block's end does nothing.

    A hold the client could not release (the server unreachable) is released by the server
    when it expires (``ttl_seconds``, 300 s by default).
    """

    def __init__(self, client: Client, state: HoldState, idempotency_key: str) -> None:
        self._client = client
        self.state = state
        self.idempotency_key = idempotency_key
        self.settlement: Settlement | None = None

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def amount(self) -> int:
        """What the hold reserved."""
        return self.state.amount

    @property
    def resolved(self) -> bool:
        return self.settlement is not None

    def settle(
        self,
        amount: int | None = None,
        quantity: Quantity | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Settlement:
        """Charge the hold: an ``amount``, or the actual ``quantity`` (and/or, for a tokens
        meter, the actual token counts in ``properties``) rated now."""
        self.settlement = self._client.settle_hold(self.id, amount, quantity, properties)
        return self.settlement

    def release(self) -> Settlement:
        """Give the hold's credits back; nothing is charged."""
        self.settlement = self._client.release_hold(self.id)
        return self.settlement

    def extend(self, ttl_seconds: int) -> HoldState:
        """Keep the hold open ``ttl_seconds`` from now (a long stream): see
        :meth:`Client.extend_hold`. ``state`` is updated (its new ``expires_at``)."""
        self.state = self._client.extend_hold(self.id, ttl_seconds)
        return self.state

    def refresh(self) -> HoldState:
        """The hold as the server has it now."""
        self.state = self._client.get_hold(self.id)
        return self.state

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.settlement is not None:
            return
        if exc is not None:
            try:
                self.release()
            except TollkeepError as failed:
                exc.add_note(
                    f"tollkeep: releasing hold {self.id} failed too ({failed}); it expires by itself"
                )
            return
        self.release()
        raise HoldNotSettled(self.id)

    def __repr__(self) -> str:
        status = self.settlement.status if self.settlement else self.state.status
        return f"Hold(id={self.id!r}, amount={self.amount}, status={status!r})"
