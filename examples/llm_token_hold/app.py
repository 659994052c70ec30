"""An LLM-style endpoint billed by the token with a hold.

Before generating, the endpoint cannot know what the answer will cost, only its worst case:
the prompt's tokens plus ``max_tokens`` of output. So it **holds** that estimate on the
``llm_tokens`` meter (the credits are reserved, other calls cannot spend them), generates, then
**settles** with the actual token counts; the hold's surplus goes back to the wallet. If the
generation fails, leaving the ``async with`` block by the exception **releases** the hold:
nothing is charged. A caller without enough credits for the worst case gets 402 before any
work is done.

The server needs a catalog with a tokens-priced meter: ``catalog.toml`` beside this file.

Run: ``TOLLKEEP_URL=http://127.0.0.1:8081 python -m examples.llm_token_hold.app`` (port 8001).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tollkeep.client import AsyncClient, TollkeepError

METER = "llm_tokens"


class Completion(BaseModel):
    model: str = "toy-small"
    prompt: str = Field(min_length=1, max_length=10_000)
    max_tokens: int = Field(64, ge=1, le=4096)


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: one token per word."""
    return len(text.split())


class GenerationFailed(Exception):
    pass


def generate(prompt: str, max_tokens: int) -> str:
    """A stand-in model: answers with the prompt's words backwards, twice, at most
    ``max_tokens`` of them. A prompt containing "crash" makes it fail."""
    words = prompt.split()
    if "crash" in words:
        raise GenerationFailed("the model crashed")
    return " ".join((words[::-1] * 2)[:max_tokens])


def create_app(tollkeep_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncClient(tollkeep_url, transport=transport) as tollkeep:
            app.state.tollkeep = tollkeep
            yield

    app = FastAPI(title="A toy LLM billed by the token", lifespan=lifespan)

    @app.exception_handler(TollkeepError)
    async def billing_refused(_: Request, exc: TollkeepError) -> JSONResponse:
        body = {"error": {"code": exc.code, "message": exc.message, **exc.details}}
        return JSONResponse(body, status_code=exc.status or 503)

    @app.post("/v1/completions")
    async def complete(body: Completion, request: Request) -> dict[str, Any]:
        auth = request.headers.get("authorization", "")
        caller = request.app.state.tollkeep.with_key(auth.removeprefix("Bearer ").strip() or None)
        input_tokens = count_tokens(body.prompt)
        estimate = {"model": body.model, "input_tokens": input_tokens, "output_tokens": body.max_tokens}
        # the hold prices the estimate with the catalog; 402 here if the wallet can't cover it
        async with caller.hold(meter=METER, properties=estimate, ttl_seconds=120) as hold:
            try:
                text = generate(body.prompt, body.max_tokens)
            except GenerationFailed as exc:
                # leaving the block by an exception releases the hold: the caller pays nothing
                raise HTTPException(502, f"generation failed: {exc}") from exc
            output_tokens = count_tokens(text)
            # the actual counts, merged over the estimate's properties, priced now
            done = await hold.settle(
                properties={"input_tokens": input_tokens, "output_tokens": output_tokens}
            )
        return {
            "model": body.model,
            "text": text,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            "held": hold.amount,
            "charged": done.charged,
            "balance": done.balance,
            "unit": done.unit,
        }

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(os.environ.get("TOLLKEEP_URL", "http://127.0.0.1:8081")), port=8001)
