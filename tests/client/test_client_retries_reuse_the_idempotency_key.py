"""Retries are safe because every attempt of one call carries the same idempotency key: a
charge whose answer was lost is charged once. Connect errors, timeouts, 502/503/504 and short
`rate_limited` waits are retried with growing, jittered, bounded waits; other 4xx never are.
The network is faked (FlakyNetwork) in front of a real server."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.factories import FlakyNetwork
from tollkeep.client import Client, ConnectionError, InsufficientCredits, ServerError
from tollkeep.client._core import RetryPolicy

Customer = Callable[[int], tuple[str, str]]


def charges(tk: Client) -> list[str]:
    return [e.event_id for e in tk.iter_usage()]


def test_a_lost_answer_is_retried_with_the_same_key_and_charged_once(server: str, customer: Customer) -> None:
    _, key = customer(10)
    net = FlakyNetwork("lost", "connect", "503")
    slept: list[float] = []
    with Client(server, key, transport=net.transport(), sleep=slept.append) as tk:
        res = tk.charge("api_call")
        assert len(net.bodies) == 4 and len(slept) == 3
        keys = {b["idempotency_key"] for b in net.bodies}
        assert keys == {res.idempotency_key}
        # the first attempt charged; the last one found it: the same event, nothing charged again
        assert res.duplicate and res.balance == 9
        assert charges(tk) == [res.event_id]


def test_a_given_key_is_the_one_retried_and_a_hold_settle_is_retried_too(
    server: str, customer: Customer
) -> None:
    _, key = customer(10)
    net = FlakyNetwork("lost", "ok", "lost", "ok")
    with Client(server, key, transport=net.transport(), sleep=lambda s: None) as tk:
        h = tk.hold(amount=5, idempotency_key="job-1")
        assert h.amount == 5 and [b["idempotency_key"] for b in net.bodies] == ["job-1", "job-1"]
        done = h.settle(amount=3)
        assert net.bodies[2:] == [{"amount": 3}, {"amount": 3}]
        assert (done.status, done.charged, done.duplicate) == ("settled", 3, True)
        assert tk.balance().balance == 7


def test_rate_limited_waits_retry_after_then_succeeds(server: str, customer: Customer) -> None:
    _, key = customer(10)
    net = FlakyNetwork("429:2", "429:1")
    slept: list[float] = []
    with Client(server, key, transport=net.transport(), sleep=slept.append) as tk:
        assert tk.charge("api_call").balance == 9
    assert slept == [2.0, 1.0]


def test_other_4xx_are_never_retried(server: str, customer: Customer) -> None:
    _, key = customer(1)
    net = FlakyNetwork()
    slept: list[float] = []
    tk = Client(server, key, transport=net.transport(), sleep=slept.append)
    with tk, pytest.raises(InsufficientCredits):
        tk.charge("search", 10)
    assert len(net.bodies) == 1 and slept == []


def test_retries_run_out_into_a_typed_error(server: str, customer: Customer) -> None:
    _, key = customer(1)
    net = FlakyNetwork("503", "503", "503")
    with Client(server, key, transport=net.transport(), retries=2, sleep=lambda s: None) as tk:
        with pytest.raises(ServerError) as info:
            tk.charge("api_call", idempotency_key="k")
        assert info.value.status == 503 and info.value.idempotency_key == "k"
        # nothing reached the server: the same key later charges once
        assert tk.charge("api_call", idempotency_key="k").duplicate is False
    net = FlakyNetwork("lost", "lost")
    with Client(server, key, transport=net.transport(), retries=1, sleep=lambda s: None) as tk:
        with pytest.raises(ConnectionError) as lost:
            tk.balance()
        assert "timed out" in lost.value.message


def test_waits_grow_with_jitter_and_stop_at_the_maximum() -> None:
    policy = RetryPolicy(retries=10, backoff=0.5, max_backoff=4.0)
    for attempt, cap in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        waits = [policy.backoff_delay(attempt) for _ in range(50)]
        assert all(cap / 2 <= w <= cap for w in waits), (attempt, waits)
        assert len(set(waits)) > 1
    assert policy.after_exception(10) is None and policy.after_exception(9) is not None
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)
