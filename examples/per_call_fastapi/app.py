"""A seller's API that charges its callers one credit per call through tollkeep.

Callers send their own tollkeep key (``tk_live_…``) as ``Authorization: Bearer``; each call to
``GET /quote`` is charged on the ``api_call`` meter before the answer is made. A caller's
``Idempotency-Key`` header makes their own retries free (the same key charges once); without
one the client generates a key, so the client's internal retries are safe either way.

Run: ``TOLLKEEP_URL=http://127.0.0.1:8080 python -m examples.per_call_fastapi.app`` (port 8000).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tollkeep.client import AsyncClient, TollkeepError

QUOTES = {
    "tolls": "The road is free; the bridge is not.",
    "ledgers": "Every balance change is an entry.",
}


def create_app(tollkeep_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # one client (one connection pool) for the app; each request acts with its caller's key
        async with AsyncClient(tollkeep_url, transport=transport) as tollkeep:
            app.state.tollkeep = tollkeep
            yield

    app = FastAPI(title="Quotes: 1 credit a call", lifespan=lifespan)

    @app.exception_handler(TollkeepError)
    async def billing_refused(_: Request, exc: TollkeepError) -> JSONResponse:
        # 401 (bad key), 402 (no credits), 429 (rate limited) reach the caller as tollkeep said
        # them; a tollkeep that cannot be reached is our outage: 503
        body = {"error": {"code": exc.code, "message": exc.message, **exc.details}}
        return JSONResponse(body, status_code=exc.status or 503)

    @app.get("/quote")
    async def quote(request: Request, topic: str = "tolls") -> dict[str, Any]:
        auth = request.headers.get("authorization", "")
        caller = request.app.state.tollkeep.with_key(auth.removeprefix("Bearer ").strip() or None)
        their_key = request.headers.get("idempotency-key")
        charge = await caller.charge(
            "api_call",
            idempotency_key=f"quote:{their_key}" if their_key else None,
            properties={"route": "/quote", "topic": topic},
        )
        # charged first, then served: a caller without credits got a 402 above and no quote
        return {
            "topic": topic,
            "quote": QUOTES.get(topic, "No quote on that yet."),
            "charged": charge.charged,
            "balance": charge.balance,
        }

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(os.environ.get("TOLLKEEP_URL", "http://127.0.0.1:8080")), port=8000)
