"""Rate limits, quotas and the concurrency cap of :class:`tollkeep.ratelimit.Limits`, in memory
and in Redis (shared by two Limits: two replicas), with real concurrency (asyncio tasks, and
threads for the blocking half)."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.ratelimit.conftest import Agent
from tollkeep.config import Settings
from tollkeep.ratelimit import ConcurrencyLimited, Limits, Permit, RateLimited, ToolNotAllowed, allowed_tool


def limits(redis_url: str | None, **kw: object) -> Limits:
    return Limits(Settings(redis_url=redis_url, **kw))  # type: ignore[arg-type]


def admit_once(lim: Limits, who: object, scope: str = "") -> Permit:
    async def go() -> Permit:
        async with lim.admit(who, scope) as permit:
            return permit

    return asyncio.run(go())


def test_key_default_limit_counts_down_then_refuses(redis_url: str | None, agent_id: str) -> None:
    lim = limits(redis_url, rate_limit_key="3/minute")
    who = Agent(agent_id)
    seen = [admit_once(lim, who, "route:POST /v1/usage") for _ in range(3)]
    assert [p.remaining for p in seen] == [2, 1, 0]
    h = lim.headers(seen[0])
    assert h["RateLimit-Limit"] == "3" and h["RateLimit-Policy"] == "3;w=60"
    assert 1 <= int(h["RateLimit-Reset"]) <= 60
    with pytest.raises(RateLimited) as exc:
        admit_once(lim, who, "route:POST /v1/holds")  # the key's limit covers every scope
    e = exc.value
    assert e.status == 429 and e.code == "rate_limited" and e.limit == 3 and e.remaining == 0
    assert 1 <= e.retry_after <= 60
    assert e.headers["Retry-After"] == str(e.retry_after) and e.headers["RateLimit-Remaining"] == "0"
    assert e.to_dict()["error"]["retry_after"] == e.retry_after
    admit_once(lim, Agent(agent_id + "-other"), "route:POST /v1/usage")  # another key: its own bucket
    lim.close()


def test_a_keys_own_rate_limit_overrides_the_default(redis_url: str | None, agent_id: str) -> None:
    lim = limits(redis_url, rate_limit_key="1/minute")
    unlimited = Agent(agent_id, rate_limit="off")
    for _ in range(5):
        assert admit_once(lim, unlimited).quota is None
    strict = Agent(agent_id + "-s", rate_limit="2/minute;3/hour")
    admit_once(lim, strict)
    assert admit_once(lim, strict).remaining == 0
    with pytest.raises(RateLimited):
        admit_once(lim, strict)
    lim.close()


def test_per_scope_limits_count_per_key_and_pattern(redis_url: str | None, agent_id: str) -> None:
    lim = limits(
        redis_url,
        rate_limits={
            "tool:weather/radar": "5/minute",
            "tool:weather/*": "2/minute",
            "route:POST /v1/*": "50/second",
        },
    )
    who = Agent(agent_id)
    admit_once(lim, who, "tool:weather/forecast")
    admit_once(lim, who, "tool:weather/alerts")  # the pattern is the bucket: 2 of 2
    with pytest.raises(RateLimited, match="in tool:weather/forecast"):
        admit_once(lim, who, "tool:weather/forecast")
    assert admit_once(lim, who, "tool:weather/radar").limit == 5  # the first match: its own
    assert admit_once(lim, who, "tool:search/web").quota is None  # no pattern: no limit
    assert admit_once(lim, who, "route:POST /v1/usage").limit == 50
    admit_once(lim, Agent(agent_id + "-b"), "tool:weather/forecast")  # another key
    lim.close()


def test_replicas_share_limits_only_through_redis(redis_url: str | None, agent_id: str) -> None:
    a, b = limits(redis_url, rate_limit_key="2/minute"), limits(redis_url, rate_limit_key="2/minute")
    who = Agent(agent_id)
    admit_once(a, who)
    admit_once(b, who)
    if redis_url:
        with pytest.raises(RateLimited):
            admit_once(a, who)  # the two replicas count in one bucket
    else:
        admit_once(a, who)  # in memory each process counts its own (documented)
    a.close()
    b.close()


def test_concurrency_cap_under_real_concurrency(redis_url: str | None, agent_id: str) -> None:
    """20 tasks start at once with a cap of 3: exactly 3 get in, and while they are inside the
    other 17 are refused; once they leave, the slots are free again. With Redis the tasks go
    through two Limits (two replicas) sharing the cap."""
    lim = limits(redis_url)
    other = limits(redis_url) if redis_url else lim  # in memory the cap is per process
    who = Agent(agent_id, max_concurrency=3)

    async def go() -> None:
        release = asyncio.Event()
        inside = 0
        most = 0

        async def call(i: int) -> str:
            nonlocal inside, most
            try:
                async with (lim if i % 2 else other).admit(who, "tool:slow/op"):
                    inside += 1
                    most = max(most, inside)
                    await release.wait()
                    inside -= 1
                    return "ok"
            except ConcurrencyLimited as exc:
                assert exc.code == "concurrency_limited" and exc.status == 429
                return "refused"

        tasks = [asyncio.create_task(call(i)) for i in range(20)]
        for _ in range(10_000):  # the refused ones finish; 3 wait inside (bounded: never hangs)
            if sum(t.done() for t in tasks) >= 17:
                break
            await asyncio.sleep(0.001)
        assert lim.in_flight(who) == 3
        release.set()
        results = await asyncio.gather(*tasks)
        assert results.count("ok") == 3 and most == 3
        assert lim.in_flight(who) == 0
        async with other.admit(who):
            assert lim.in_flight(who) == 1

    asyncio.run(go())
    lim.close()
    other.close()


def test_blocking_half_from_threads(redis_url: str | None, agent_id: str) -> None:
    lim = limits(redis_url, max_concurrency=2)
    who = Agent(agent_id)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: _try_enter(lim, who), range(8)))
    permits = [p for p in outcomes if p is not None]
    assert len(permits) == 2 and lim.in_flight(who) == 2
    for p in permits:
        lim.leave(p)
        lim.leave(p)  # once only
    assert lim.in_flight(who) == 0
    lim.close()


def _try_enter(lim: Limits, who: Agent) -> Permit | None:
    try:
        return lim.enter(who, "route:POST /v1/holds")
    except ConcurrencyLimited:
        return None


def test_install_ids_per_address(redis_url: str | None) -> None:
    a, b = limits(redis_url, install_ids_per_ip_per_hour=2), limits(redis_url, install_ids_per_ip_per_hour=2)
    ip = f"198.51.100.7-{uuid.uuid4().hex[:8]}"  # a fresh bucket
    a.install_ids.hit(ip)
    b.install_ids.hit(ip)
    if redis_url:
        with pytest.raises(RateLimited):
            a.install_ids.hit(ip)
    a.close()
    b.close()


def test_tool_allowlist() -> None:
    assert allowed_tool(None, "anything")
    assert not allowed_tool([], "anything")
    tools = ["weather/*", "GET /v1/search*", "exact/tool"]
    assert allowed_tool(tools, "weather/forecast")
    assert allowed_tool(tools, "GET /v1/search?q=x")
    assert allowed_tool(tools, "exact/tool")
    assert not allowed_tool(tools, "Weather/forecast")  # case-sensitive
    assert not allowed_tool(tools, "exact/tool2")
    lim = limits(None)
    who = Agent("key_x", tools=("a/*",))
    assert lim.allowed_tool(who, "a/b") and not lim.allowed_tool(who, "b/a")
    with pytest.raises(ToolNotAllowed) as exc:
        lim.require_tool(who, "b/a")
    assert exc.value.status == 403 and exc.value.code == "tool_not_allowed"


def test_redis_down_lets_calls_through() -> None:
    lim = limits("redis://127.0.0.1:1/0", rate_limit_key="1/minute", max_concurrency=1)
    who = Agent("key_down")
    for _ in range(3):
        admit_once(lim, who)
    lim.writes.hit("cus")
    lim.close()


def test_bad_limits_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        Settings(rate_limit_key="lots")
    with pytest.raises(ValueError, match="not a rate limit"):
        Settings(rate_limits={"tool:*": "fast"})


def test_the_slot_is_given_back_when_the_call_fails(redis_url: str | None, agent_id: str) -> None:
    lim = limits(redis_url)
    who = Agent(agent_id, max_concurrency=1)

    async def go() -> None:
        with pytest.raises(ValueError):
            async with lim.admit(who, "tool:x/y"):
                raise ValueError("upstream failed")
        assert lim.in_flight(who) == 0
        permit = await lim.acquire(who, "tool:x/y")  # a stream: released elsewhere, once
        with pytest.raises(ConcurrencyLimited):
            await lim.acquire(who, "tool:x/y")
        await lim.arelease(permit)
        await lim.arelease(permit)
        assert lim.in_flight(who) == 0

    asyncio.run(go())
    lim.close()
