"""In-process billing: TollkeepMiddleware + @charge on FastAPI and Starlette routes, served by
real uvicorn. Charged once when the response is complete with a charged status; an error
status, an exception or a refused caller is not charged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse

from tests.gateway.http.conftest import balance, customer
from tests.gateway.http.fake_upstream import serve
from tollkeep.gateway.asgi import TollkeepMiddleware, charge
from tollkeep.runtime import Tollkeep


def build(tk: Tollkeep, calls: list[str]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TollkeepMiddleware, tollkeep=tk)

    @app.get("/search")
    @charge("search", quantity=lambda request: int(request.query_params.get("n", "10")))
    async def search(q: str, n: int = 10) -> dict[str, object]:
        calls.append("search")
        return {"q": q, "results": n}

    @app.get("/flat")
    @charge(amount=3)
    def flat(request: Request) -> dict[str, object]:
        calls.append("flat")
        return {"customer": request.state.tollkeep_principal.customer_id}

    @app.get("/refused")
    @charge(amount=3)
    async def refused() -> dict[str, str]:
        calls.append("refused")
        raise HTTPException(503, "not now")

    @app.get("/crash")
    @charge(amount=3)
    async def crash() -> dict[str, str]:
        calls.append("crash")
        raise RuntimeError("bug")

    @charge("api_call")
    async def plain(request: Request) -> PlainTextResponse:
        calls.append("plain")
        return PlainTextResponse("ok")

    @app.get("/streamed")
    @charge(amount=2)
    async def streamed() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"part {i}\n".encode()

        return StreamingResponse(gen(), media_type="text/plain")

    app.add_route("/plain", plain)
    return app


def test_charge_decorator_and_middleware(gtk: Tollkeep) -> None:
    cid, key = customer(gtk, credits=20)
    calls: list[str] = []
    h = {"Authorization": f"Bearer {key}"}
    with serve(build(gtk, calls)) as url, httpx.Client(base_url=url) as c:
        r = c.get("/search", params={"q": "x", "n": 10}, headers=h)
        assert r.status_code == 200 and r.json() == {"q": "x", "results": 10}
        assert balance(gtk, cid) == 15  # 10 results x 0.5
        r = c.get("/flat", headers={"X-API-Key": key, "Idempotency-Key": "k1"})
        assert r.status_code == 200 and r.json() == {"customer": cid}
        r = c.get("/flat", headers={"X-API-Key": key, "Idempotency-Key": "k1"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_used"
        assert calls.count("flat") == 1
        assert balance(gtk, cid) == 12
        assert c.get("/refused", headers=h).status_code == 503
        # an unhandled error: 500 (uvicorn then closes that connection: a client of its own)
        assert httpx.get(f"{url}/crash", headers=h).status_code == 500
        assert c.get("/plain", headers=h).text == "ok"
        assert balance(gtk, cid) == 11
        r = c.get("/streamed", headers=h)  # a streamed response: charged once it is complete
        assert r.status_code == 200 and r.text == "part 0\npart 1\npart 2\n"
        assert balance(gtk, cid) == 9
        r = c.get("/flat")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = c.get("/search", params={"q": "x", "n": 100}, headers=h)  # 50 credits
        assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_credits"
        assert "topup" in r.json()["error"]
    assert calls.count("search") == 1  # the refused calls never ran
    assert balance(gtk, cid) == 9
