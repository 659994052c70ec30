"""Hostile and random input, generated from our own OpenAPI spec by schemathesis: no request,
however malformed, may get a 5xx, and every error must be the JSON envelope. The ledger is
verified afterwards by the `tk` fixture."""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import ADMIN
from tollkeep.runtime import Tollkeep

EXAMPLES_PER_OPERATION = 12  # x 2 modes x every operation (60+), on SQLite and PostgreSQL


def test_no_server_errors(client: TestClient, tk: Tollkeep) -> None:
    cid = tk.customers.create("fuzz-customer")["id"]
    tk.ledger.grant(cid, 1000, idempotency_key="fuzz-grant")
    api_key = tk.keys.create(cid)["key"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) > 20
    calls = sum(
        check_operation(op, ADMIN if op.path.startswith("/admin") else api_key, mode)
        for op in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)  # valid, then schema-breaking input
    )
    assert calls >= len(operations) * 5, calls  # the generator did produce cases for each


def check_operation(op: Any, token: str, mode: GenerationMode) -> int:
    """Run generated cases against one operation; returns how many were sent."""
    calls = 0

    @given(case=op.as_strategy(generation_mode=mode), use_token=st.booleans())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any, use_token: bool) -> None:
        nonlocal calls
        calls += 1
        headers = dict(case.headers or {})
        if use_token:
            headers["Authorization"] = f"Bearer {token}"
        case.headers = headers
        response = case.call()
        assert response.status_code < 500, (case.method, case.path, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("error", {}).get("code"), str), response.text

    try:
        check()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # an operation with nothing to get wrong (no parameters, no body) has no negative cases
    return calls
