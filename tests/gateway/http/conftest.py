"""Fixtures of the HTTP gateway's tests: a runtime on a test catalog (token prices tests can
count: 1 credit per input token, 2 per output token for ``test-model``; priced routes), the
fake upstream and the gateway, both served by real uvicorn. After each test: no hold left
open, and the ledger verified."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import make_settings, verified_runtime
from tests.factories import eventually
from tests.gateway.http.fake_upstream import Seen, build_app, serve
from tollkeep.api.ratelimit import Limiter
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.gateway.http import GatewayConfig, HttpGateway
from tollkeep.gateway.proxy import Upstream
from tollkeep.runtime import Tollkeep

CATALOG = (
    DEFAULT_CATALOG_TEXT.replace("per = 1000000", "per = 1")
    + """

[meters.llm_tokens.price.models."test-model"]
input = 1
output = 2

[[routes]]
method = "GET"
path = "/items/{id}"
price = 3

[[routes]]
method = "GET"
path = "/status/*"
price = 2

[[routes]]
method = "POST"
path = "/items"
meter = "api_call"

[[routes]]
method = "GET"
path = "/chunks"
price = 1
feature = "priority"
"""
)
UPSTREAM_SECRET = "sk-upstream-secret"


@pytest.fixture
def gtk(db_url: str, tmp_path: Path) -> Iterator[Tollkeep]:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG)
    with verified_runtime(make_settings(db_url, catalog_path=path)) as runtime:
        yield runtime
        assert open_holds(runtime) == 0


def open_holds(tk: Tollkeep) -> int:
    with tk.db.scope(write=False) as s:
        return int(s.execute(text("SELECT count(*) FROM holds WHERE status = 'open'")).scalar_one())


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def upstream(seen: Seen) -> Iterator[str]:
    with serve(build_app(seen)) as url:
        yield url


Gateway = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def gateway(gtk: Tollkeep, upstream: str) -> Gateway:
    """``with gateway(**config) as url``: the gateway in front of the fake upstream."""

    @contextmanager
    def run(upstream_url: str | None = None, limit: str | None = None, **kw: Any) -> Iterator[str]:
        base = GatewayConfig(
            upstream=Upstream(
                "default",
                upstream_url or upstream,
                ((b"authorization", f"Bearer {UPSTREAM_SECRET}".encode()),),
            )
        )
        limit_writes = Limiter.parse(limit, what="charged calls").hit if limit else None
        gw = HttpGateway(gtk, replace(base, **kw), limit_writes=limit_writes)
        with serve(gw, lifespan="on") as url:
            yield url

    return run


def customer(tk: Tollkeep, ext: str = "alice", credits: int = 0, plan: str | None = None) -> tuple[str, str]:
    """(customer id, API key) with ``credits`` purchased."""
    cid = tk.customers.create(ext, plan=plan)["id"]
    key = tk.keys.create(cid)["key"]
    if credits:
        tk.ledger.grant(cid, credits, idempotency_key=f"grant-{ext}")
    return cid, key


def balance(tk: Tollkeep, cid: str) -> int:
    """The balance once every hold is resolved (the gateway settles or releases a call's hold
    just after its answer's last byte: a client can read the balance before that commits)."""
    assert eventually(lambda: open_holds(tk) == 0, timeout=30), "a hold stayed open"
    return int(tk.balance(cid)["balance"])
