"""Rate-limit tests run with the memory storage and, when it answers, with Redis
(TOLLKEEP_TEST_REDIS_URL, default redis://127.0.0.1:6379/15); without it those runs are skipped
with the reason, like the PostgreSQL runs. Each test counts in buckets of its own (fresh ids),
so nothing is flushed."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

REDIS_URL = os.environ.get("TOLLKEEP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_state: dict[str, str | None] = {}


def redis_unavailable() -> str | None:
    if "why" not in _state:
        try:
            import redis

            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
            _state["why"] = None
        except Exception as exc:
            _state["why"] = f"Redis at {REDIS_URL} does not answer ({type(exc).__name__})"
    return _state["why"]


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest) -> str | None:
    """None (memory) or the Redis URL (skipped, saying why, when Redis does not answer)."""
    if request.param == "memory":
        return None
    why = redis_unavailable()
    if why:
        pytest.skip(f"skipping Redis run: {why}")
    return REDIS_URL


@dataclass(frozen=True)
class Agent:
    """What the limits read of a caller (a Principal has these and more)."""

    key_id: str
    customer_id: str = "cus_test"
    rate_limit: str | None = None
    max_concurrency: int | None = None
    tools: tuple[str, ...] | None = None


@pytest.fixture
def agent_id() -> str:
    return f"key_{uuid.uuid4().hex[:16]}"
