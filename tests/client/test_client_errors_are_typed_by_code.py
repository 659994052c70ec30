"""Every failure is a TollkeepError of the class of its code: 402 with `available`, 409, 404,
401, 422 and 429 from a real server; codes the client does not know fall back on the status;
a body that is not the envelope still gives a typed error; no httpx exception leaks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.factories import admin_http, new_customer, served
from tollkeep.client import (
    AuthError,
    CapExceeded,
    Client,
    Conflict,
    ConnectionError,
    Forbidden,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    TollkeepError,
)
from tollkeep.client.errors import error_for

Customer = Callable[[int], tuple[str, str]]


def test_402_says_what_was_required_and_available_and_charges_nothing(
    server: str, customer: Customer
) -> None:
    _, key = customer(3)
    with Client(server, key) as tk:
        with pytest.raises(InsufficientCredits) as info:
            tk.charge("search", 10, idempotency_key="too-much")
        err = info.value
        assert (err.status, err.code, err.required, err.available) == (402, "insufficient_credits", 5, 3)
        assert err.idempotency_key == "too-much" and "only 3 available" in err.message
        with pytest.raises(InsufficientCredits):
            tk.hold(amount=4)
        assert tk.balance().balance == 3


def test_409_for_a_key_reused_with_another_request_and_for_a_resolved_hold(
    server: str, customer: Customer
) -> None:
    _, key = customer(10)
    with Client(server, key) as tk:
        tk.charge("api_call", idempotency_key="k1")
        with pytest.raises(IdempotencyConflict) as info:
            tk.charge("api_call", 2, idempotency_key="k1")
        assert info.value.status == 409 and isinstance(info.value, Conflict)
        h = tk.hold(amount=2)
        h.release()
        with pytest.raises(Conflict) as resolved:
            tk.settle_hold(h.id, amount=1)
        assert resolved.value.code == "hold_resolved" and not isinstance(resolved.value, IdempotencyConflict)
        assert tk.balance().balance == 9


def test_404_401_and_422(server: str, customer: Customer) -> None:
    _, key = customer(1)
    with Client(server, key) as tk:
        with pytest.raises(NotFound) as nf:
            tk.get_hold("hld_nope")
        assert (nf.value.status, nf.value.code) == (404, "hold_not_found")
        with pytest.raises(InvalidRequest) as bad:
            tk.charge("no_such_meter")
        assert (bad.value.status, bad.value.code, bad.value.details["meter"]) == (
            422,
            "unknown_meter",
            "no_such_meter",
        )
    with Client(server, "tk_live_" + "x" * 43) as wrong:
        with pytest.raises(AuthError) as auth:
            wrong.balance()
        assert (auth.value.status, auth.value.code) == (401, "invalid_api_key")
    with Client(server) as nobody, pytest.raises(AuthError) as missing:
        nobody.charge("api_call")
    assert missing.value.code == "missing_api_key"


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("limited")
    env = {"TOLLKEEP_RATE_LIMIT_USAGE": "1/minute"}
    with served(f"sqlite:///{tmp / 'tollkeep.db'}", tmp, env=env) as base:
        yield base


def test_429_rate_limited_with_a_long_retry_after_is_raised_at_once(limited_server: str) -> None:
    with admin_http(limited_server) as admin:
        _, key = new_customer(admin, "limited", 10)
    slept: list[float] = []
    with Client(limited_server, key, max_retry_after=5, sleep=slept.append) as tk:
        tk.charge("api_call")
        with pytest.raises(RateLimited) as info:
            tk.charge("api_call")
        assert info.value.status == 429 and info.value.retry_after is not None
        assert 5 < info.value.retry_after <= 60
        assert slept == []  # a minute is longer than max_retry_after: no wait, no retry
        assert tk.balance().balance == 9


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (
            429,
            {"error": {"code": "cap_exceeded", "message": "capped", "resets_at": "2030-01-01T00:00:00Z"}},
            CapExceeded,
            "cap_exceeded",
        ),
        (403, {"error": {"code": "insufficient_scope", "message": "no"}}, Forbidden, "insufficient_scope"),
        (409, {"error": {"code": "some_new_conflict", "message": "?"}}, Conflict, "some_new_conflict"),
        (429, None, RateLimited, "http_429"),
        (418, {"error": {"code": "teapot", "message": "short and stout"}}, TollkeepError, "teapot"),
        (500, {"error": {"code": "internal_error", "message": "logged"}}, ServerError, "internal_error"),
        (502, None, ServerError, "http_502"),
        (413, {"error": {"code": "body_too_large", "message": "big"}}, InvalidRequest, "body_too_large"),
    ],
)
def test_codes_pick_the_class_and_unknown_codes_fall_back_on_the_status(
    status: int, body: object, cls: type[TollkeepError], code: str
) -> None:
    err = error_for(status, body, text="<html>Bad Gateway</html>")
    assert type(err) is cls and err.code == code and err.status == status
    if isinstance(err, CapExceeded):
        assert err.resets_at == "2030-01-01T00:00:00Z"


def test_a_non_json_error_page_and_a_dead_server_give_typed_errors_not_httpx_ones() -> None:
    page = httpx.MockTransport(lambda r: httpx.Response(500, text="<h1>oops</h1>"))
    with (
        Client("http://tollkeep.test", "tk_live_x", transport=page) as tk,
        pytest.raises(ServerError) as info,
    ):
        tk.balance()
    assert (info.value.status, info.value.code, info.value.message) == (500, "http_500", "<h1>oops</h1>")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    slept: list[float] = []
    dead = httpx.MockTransport(refuse)
    tk = Client("http://tollkeep.test", "tk_live_x", transport=dead, retries=2, sleep=slept.append)
    with tk, pytest.raises(ConnectionError) as down:
        tk.charge("api_call", idempotency_key="k-down")
    err = down.value
    assert isinstance(err, TollkeepError) and not isinstance(err, httpx.HTTPError)
    assert (err.code, err.status, err.idempotency_key) == ("connection_error", None, "k-down")
    assert isinstance(err.__cause__, httpx.ConnectError) and "3 attempt(s)" in err.message
    assert len(slept) == 2
