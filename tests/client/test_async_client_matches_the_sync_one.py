"""AsyncClient does what Client does, awaited: charges and balances, typed errors, retries
that reuse the idempotency key, and `async with client.hold(...)` settling, releasing on an
exception, and refusing to end unsettled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.factories import FlakyNetwork
from tollkeep.client import AsyncClient, HoldNotSettled, InsufficientCredits, NotFound

Customer = Callable[[int], tuple[str, str]]


class Boom(Exception):
    pass


def test_charges_balances_and_listings(server: str, customer: Customer) -> None:
    _, key = customer(10)

    async def main() -> None:
        async with AsyncClient(server, key) as tk:
            a = await tk.charge("api_call")
            b = await tk.usage("api_call", idempotency_key=a.idempotency_key)
            assert (a.balance, b.duplicate, b.event_id) == (9, True, a.event_id)
            assert (await tk.balance()).available == 9
            assert [e.event_id async for e in tk.iter_usage(page_size=1)] == [a.event_id]
            assert "api_call" in (await tk.pricing()).meters

    asyncio.run(main())


def test_typed_errors(server: str, customer: Customer) -> None:
    _, key = customer(2)

    async def main() -> None:
        async with AsyncClient(server, key) as tk:
            with pytest.raises(InsufficientCredits) as info:
                await tk.charge("api_call", 5)
            assert (info.value.required, info.value.available) == (5, 2)
            with pytest.raises(NotFound):
                await tk.release_hold("hld_missing")

    asyncio.run(main())


def test_a_lost_answer_is_retried_with_the_same_key_and_charged_once(server: str, customer: Customer) -> None:
    _, key = customer(10)
    net = FlakyNetwork("lost", "502")
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async def main() -> None:
        async with AsyncClient(server, key, transport=net.async_transport(), sleep=record) as tk:
            res = await tk.charge("api_call")
            assert {b["idempotency_key"] for b in net.bodies} == {res.idempotency_key}
            assert res.duplicate and res.balance == 9 and len(slept) == 2

    asyncio.run(main())


def test_async_with_a_hold_settles_releases_on_exception_and_refuses_to_end_unsettled(
    server: str, customer: Customer
) -> None:
    _, key = customer(50)

    async def main() -> None:
        async with AsyncClient(server, key) as tk:
            async with tk.hold(amount=20) as h:
                done = await h.settle(amount=5)
            assert (done.charged, done.balance) == (5, 45)
            with pytest.raises(Boom):
                async with tk.hold(amount=20) as h2:
                    assert (await tk.balance()).held == 20
                    raise Boom
            assert (await h2.refresh()).status == "released"
            with pytest.raises(HoldNotSettled):
                async with tk.hold(amount=20):
                    pass
            pending = tk.hold(amount=7, idempotency_key="await-twice")
            h3, again = await pending, await pending
            assert h3.id == again.id and again.state.duplicate
            await h3.release()
            bal = await tk.balance()
            assert (bal.balance, bal.held) == (45, 0)

    asyncio.run(main())


def test_an_async_hold_is_extended(server: str, customer: Customer) -> None:
    _, key = customer(10)

    async def main() -> None:
        async with AsyncClient(server, key) as tk, tk.hold(amount=4, ttl_seconds=30) as h:
            first = h.state.expires_at
            state = await h.extend(600)
            assert first is not None and state.expires_at is not None and state.expires_at > first
            assert (await tk.get_hold(h.id)).expires_at == state.expires_at
            await h.release()

    asyncio.run(main())
