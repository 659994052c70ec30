"""A seller's backend that meters its own users by customer id, with a server key.

Here the buyers never see a tollkeep key: they log in to the seller's app (a stand-in
``X-User`` header), and the backend, holding one **server key** (``tk_sk_…``), charges the
right tollkeep customer for each search (``search`` meter, one unit per result) and shows
them their credits. The users table would keep each user's tollkeep customer id; here it is
the ``customers`` mapping given to :func:`create_app`.

It uses the synchronous client: FastAPI runs ``def`` endpoints in a thread pool.

Run: ``TOLLKEEP_URL=http://127.0.0.1:8080 TOLLKEEP_SERVER_KEY=tk_sk_… \
python -m examples.server_key_backend.app`` (port 8002; users from ``CUSTOMERS`` as
``alice=cus_…,bob=cus_…``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from tollkeep.client import Client, TollkeepError

CORPUS = [
    "toll bridge opening hours",
    "toll road prices",
    "ledger basics",
    "credit ledger design",
    "toll plaza history",
]


def search_corpus(q: str) -> list[str]:
    return [doc for doc in CORPUS if q.lower() in doc]


def create_app(
    tollkeep_url: str,
    server_key: str,
    customers: Mapping[str, str],
    *,
    transport: httpx.BaseTransport | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with Client(tollkeep_url, server_key, transport=transport) as tollkeep:
            app.state.tollkeep = tollkeep
            yield

    app = FastAPI(title="Search, metered per result", lifespan=lifespan)

    @app.exception_handler(TollkeepError)
    async def billing_refused(_: Request, exc: TollkeepError) -> JSONResponse:
        body = {"error": {"code": exc.code, "message": exc.message, **exc.details}}
        return JSONResponse(body, status_code=exc.status or 503)

    def customer_of(user: str | None) -> str:
        if user is None or user not in customers:
            raise HTTPException(401, "log in first")  # the seller's own authentication
        return customers[user]

    @app.get("/search")
    def search(
        request: Request,
        q: str,
        x_user: str | None = Header(None),
        x_request_id: str | None = Header(None),
    ) -> dict[str, Any]:
        customer_id = customer_of(x_user)
        tollkeep: Client = request.app.state.tollkeep
        results = search_corpus(q)
        charged = 0
        if results:  # no results, no charge
            charge = tollkeep.charge(
                "search",
                len(results),
                customer_id=customer_id,
                # the request id makes a retried request free; without one a key is generated
                idempotency_key=f"search:{x_request_id}" if x_request_id else None,
                properties={"q": q},
            )
            charged = charge.charged
        return {"q": q, "results": results, "charged": charged}

    @app.get("/credits")
    def credits(request: Request, x_user: str | None = Header(None)) -> dict[str, Any]:
        tollkeep: Client = request.app.state.tollkeep
        bal = tollkeep.balance(customer_id=customer_of(x_user))
        return {"available": bal.available, "unit": bal.unit}

    return app


if __name__ == "__main__":
    import uvicorn

    users = dict(pair.split("=", 1) for pair in os.environ.get("CUSTOMERS", "").split(",") if pair)
    url = os.environ.get("TOLLKEEP_URL", "http://127.0.0.1:8080")
    uvicorn.run(create_app(url, os.environ["TOLLKEEP_SERVER_KEY"], users), port=8002)
