"""The OpenAPI document and the docs pages.

* Security: two bearer schemes are declared — ``AdminToken`` on every ``/admin`` route and
  ``APIKey`` (a buyer's ``tk_live_…`` key) on every ``/v1`` route but pricing, with the
  anonymous ``X-Install-Id`` header as the alternative where the catalog allows it — so
  ``/docs`` has an Authorize button and generated clients know what to send.
* ``/docs`` (Swagger UI) and ``/redoc`` are served from assets in the installed package
  (``fastapi-offline``), never from a CDN: the docs work on a machine without internet.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["PUBLIC_WITHOUT_AUTH", "SECURITY_SCHEMES", "install_openapi"]

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "AdminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin token (TOLLKEEP_ADMIN_TOKEN, written to .env by `tollkeep init`).",
    },
    "APIKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A buyer's API key (`tk_live_…`), issued by POST /admin/customers/{id}/keys.",
    },
    "InstallId": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Install-Id",
        "description": "Anonymous callers (when the catalog's [anonymous] allowance is on).",
    },
}
PUBLIC_WITHOUT_AUTH = frozenset({"/v1/pricing", "/healthz"})


def install_openapi(app: FastAPI) -> None:
    """Build the document once, with the security schemes on every operation that needs one."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in doc.get("paths", {}).items():
            for op in operations.values():
                if not isinstance(op, dict) or path in PUBLIC_WITHOUT_AUTH:
                    continue
                if path.startswith("/admin"):
                    op["security"] = [{"AdminToken": []}]
                elif path.startswith("/v1"):
                    op["security"] = [{"APIKey": []}, {"InstallId": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
