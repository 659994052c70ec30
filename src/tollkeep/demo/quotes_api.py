"""The demo's upstream HTTP API: the seller's own service, which knows nothing of tollkeep.

python -m tollkeep.demo.quotes_api PORT      # what `tollkeep demo` puts behind its HTTP gateway
"""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

QUOTES = [
    "Simplicity is prerequisite for reliability.",
    "Make it work, make it right, make it fast.",
    "The cheapest, fastest and most reliable components are those that aren't there.",
]


async def quote(request: Request) -> JSONResponse:
    i = int(request.path_params["n"]) % len(QUOTES)
    # the gateway swapped the buyer's key for the seller's own upstream credential
    return JSONResponse({"n": i, "quote": QUOTES[i], "upstream_auth": request.headers.get("x-upstream-auth")})


app = Starlette(routes=[Route("/quotes/{n:int}", quote)])

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
