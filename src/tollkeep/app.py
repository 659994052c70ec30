"""``create_app(settings)``: the FastAPI application around one :class:`Tollkeep` runtime."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from tollkeep import __version__
from tollkeep.api.errors import install_error_handlers
from tollkeep.api.middleware import BodyLimitMiddleware, HotRoutes
from tollkeep.api.openapi import install_openapi
from tollkeep.audit import routes as audit_routes
from tollkeep.catalog import routes as catalog_routes
from tollkeep.config import Settings
from tollkeep.customers import routes as customer_routes
from tollkeep.funnel import routes as funnel_routes
from tollkeep.keys import routes as key_routes
from tollkeep.kit.actor import SYSTEM
from tollkeep.kit.errors import TollkeepError
from tollkeep.ledger import routes as ledger_routes
from tollkeep.licensing import routes as license_routes
from tollkeep.operators import routes as operator_routes
from tollkeep.payments import routes as payment_routes
from tollkeep.plans import routes as plan_routes
from tollkeep.runtime import Tollkeep
from tollkeep.subscriptions import routes as subscription_routes
from tollkeep.webhooks import routes as webhook_routes

__all__ = ["create_app"]

log = logging.getLogger("tollkeep")

DESCRIPTION = """
tollkeep sells access to AI tools and APIs by the call, the token or the plan.

* **Public API** (`/v1`, `Authorization: Bearer <api key>`): balance, usage (metered charges),
  holds (reserve → settle/release), pricing discovery.
* **Admin API** (`/admin`, `Authorization: Bearer <admin token>`): customers, keys, credits,
  refunds, catalog reload, ledger verification, the webhook inbox, the funnel.
* **Payments**: `POST /v1/checkout` buys a credit pack or a plan; providers post to
  `/webhooks/{stripe|github|btcpay|zaprite}` (verified, stored, processed once).

Amounts are integers in the catalog's credit unit (responses name it in `unit`).
Errors are `{"error": {"code": "...", "message": "..."}}`.
"""


# Each domain owns its routes; the app only collects them (public first, as the docs list them).
ROUTERS = (
    ledger_routes.router,
    catalog_routes.public_router,
    payment_routes.public_router,
    payment_routes.webhooks_router,
    payment_routes.pay_router,
    license_routes.public_router,
    subscription_routes.public_router,
    customer_routes.router,
    plan_routes.router,
    ledger_routes.admin_router,
    key_routes.router,
    catalog_routes.admin_router,
    operator_routes.router,
    audit_routes.router,
    payment_routes.admin_router,
    funnel_routes.router,
    webhook_routes.router,
    license_routes.admin_router,
    subscription_routes.router,
)


def create_app(settings: Settings | None = None, *, runtime: Tollkeep | None = None) -> FastAPI:
    settings = settings or (runtime.settings if runtime else Settings())
    owned = runtime is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tk = runtime or Tollkeep(settings)
        app.state.tollkeep = tk
        app.state.limiters = tk.limits  # the runtime's rate limits (tollkeep.ratelimit)
        if settings.run_workers:
            tk.start_workers()
        # the catalog's MCP upstreams ([gateway.upstreams.*]), connected and served at /mcp/<name>
        mcp = AsyncExitStack()
        if tk.catalog.tools.upstreams:
            from tollkeep.gateway.serve import mount_upstreams

            await mount_upstreams(app, tk, mcp, host=settings.host)
        # Objects made at start-up live as long as the process: keep them out of the garbage
        # collector's full passes, which otherwise show up as latency spikes under load.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        with suppress(NotImplementedError, RuntimeError, ValueError):  # not in the main thread / not POSIX
            loop.add_signal_handler(signal.SIGHUP, _reload, tk)
        try:
            yield
        finally:
            await mcp.aclose()
            with suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            if owned:
                tk.close()

    # redirect_slashes=False: Starlette would answer `POST /v1/usage/` with a 307 to an absolute
    # URL built from the Host header (an open redirect); a path with a stray slash is a 404
    app = FastAPIOffline(  # FastAPI, with /docs and /redoc served from local assets
        title="tollkeep",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    if runtime is not None:
        app.state.tollkeep = runtime
        app.state.limiters = runtime.limits
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(HotRoutes, routes={**ledger_routes.HOT_ROUTES, **payment_routes.HOT_ROUTES})
    # our own body limit, not FastAPI's max_body_size (that one answers 413 in plain text)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        by_prefix={"/webhooks/": settings.webhook_max_body_bytes},
    )

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    for router in ROUTERS:
        app.include_router(router)
    return app


def _reload(tk: Tollkeep) -> None:
    try:
        tk.reload_catalog(actor=SYSTEM)
    except TollkeepError as exc:
        log.error("catalog reload refused, keeping %s: %s", tk.catalog.version, exc.message)


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory tollkeep.app:app_from_env`` (settings from TOLLKEEP_* variables)."""
    return create_app(Settings())
