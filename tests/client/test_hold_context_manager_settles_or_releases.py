"""`with client.hold(...) as h:` settles what the block says, releases the hold when the block
raises (the balance comes back whole) and, when the block forgets to settle, releases it and
raises HoldNotSettled: leaving the block never charges silently."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.factories import FlakyNetwork
from tollkeep.client import Client, HoldNotSettled, InsufficientCredits

Customer = Callable[[int], tuple[str, str]]


class Boom(Exception):
    pass


def test_settling_inside_the_block_charges_the_actual_amount(server: str, customer: Customer) -> None:
    _, key = customer(100)
    with Client(server, key) as tk:
        with tk.hold(amount=40, ttl_seconds=60) as h:
            assert h.state.status == "open" and h.state.balance == 60
            assert tk.balance().held == 40
            done = h.settle(amount=25)
        assert (done.status, done.charged, done.balance) == ("settled", 25, 75)
        assert h.resolved and h.refresh().status == "settled" and h.state.settled_amount == 25
        assert [e.charged for e in tk.iter_usage()] == [25]


def test_an_exception_in_the_block_releases_the_hold_and_propagates(server: str, customer: Customer) -> None:
    _, key = customer(100)
    with Client(server, key) as tk:
        with pytest.raises(Boom), tk.hold(amount=40) as h:
            assert tk.balance().balance == 60
            raise Boom("the upstream call failed")
        assert h.settlement is not None and h.settlement.status == "released"
        bal = tk.balance()
        assert (bal.balance, bal.held) == (100, 0)
        assert tk.get_hold(h.id).status == "released"


def test_a_block_that_forgets_to_settle_releases_and_says_so(server: str, customer: Customer) -> None:
    _, key = customer(10)
    with Client(server, key) as tk:
        with pytest.raises(HoldNotSettled) as info, tk.hold(amount=4) as h:
            pass
        assert info.value.code == "hold_not_settled" and h.id in info.value.message
        assert tk.get_hold(h.id).status == "released" and tk.balance().balance == 10
        # an explicit release is the way to charge nothing without an error
        with tk.hold(amount=4) as h2:
            h2.release()
        assert tk.balance().balance == 10


def test_a_settle_the_wallet_cannot_cover_releases_the_hold_on_the_way_out(
    server: str, customer: Customer
) -> None:
    _, key = customer(10)
    with Client(server, key) as tk:
        with pytest.raises(InsufficientCredits), tk.hold(amount=8) as h:
            h.settle(amount=50)
        assert tk.get_hold(h.id).status == "released" and tk.balance().balance == 10


def test_a_release_that_fails_too_is_noted_on_the_original_exception(server: str, customer: Customer) -> None:
    _, key = customer(10)
    net = FlakyNetwork("ok", "connect")  # the network goes away after the hold was made
    with Client(server, key, transport=net.transport(), retries=0) as tk:
        with pytest.raises(Boom) as info, tk.hold(amount=3, ttl_seconds=30) as h:
            raise Boom("failed")
        assert any(f"releasing hold {h.id} failed too" in note for note in info.value.__notes__)
        assert tk.get_hold(h.id).status == "open"  # it expires by itself; tidy up now
        tk.release_hold(h.id)
        assert tk.balance().balance == 10


def test_a_tokens_hold_settles_from_the_actual_token_counts(server: str, customer: Customer) -> None:
    _, key = customer(100)
    estimate = {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 3000}
    with Client(server, key) as tk:
        with tk.hold(meter="llm_tokens", properties=estimate) as h:
            assert h.amount == 33  # (1000 x 2500 + 3000 x 10000) / 1M = 32.5, rounded up
            done = h.settle(properties={"input_tokens": 980, "output_tokens": 1500})
        assert done.charged == 18  # (980 x 2500 + 1500 x 10000) / 1M = 17.45 -> 18
        event = next(iter(tk.iter_usage()))
        assert event.quantity == 2480 and event.hold_id == h.id
        assert event.properties == {"model": "gpt-4o", "input_tokens": 980, "output_tokens": 1500}


def test_a_hold_is_extended_for_a_long_stream(server: str, customer: Customer) -> None:
    _, key = customer(100)
    with Client(server, key) as tk:
        with tk.hold(amount=40, ttl_seconds=30) as h:
            first = h.state.expires_at
            state = h.extend(3600)
            assert state is h.state and state.status == "open" and state.balance == 60
            assert first is not None and state.expires_at is not None and state.expires_at > first
            assert tk.get_hold(h.id).expires_at == state.expires_at
            h.settle(amount=10)
        assert tk.balance().balance == 90
