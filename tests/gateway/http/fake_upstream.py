"""A fake upstream for the HTTP gateway's tests, served by real uvicorn: a plain JSON API and
OpenAI- / Anthropic-compatible LLM endpoints with their real JSON and SSE shapes.

How it answers is driven by the request: the last user message's text ``"words:N"`` makes an
answer of N pieces of ``"abcd"`` (4 characters: one token by the gateway's estimator, and
one token in the usage it reports); ``"slow"`` in it streams a piece every 20 ms; ``"fail"``
answers 500; ``"hang"`` waits until the caller gives up; ``"break"`` crashes a stream after
3 pieces (the connection is cut). ``prompt_tokens`` / ``input_tokens`` are the prompt's
characters / 4 (rounded up), the gateway's own estimate, so tests can predict every charge.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.factories import free_port

PIECE = "abcd"


@dataclass
class Seen:
    """What the upstream saw (tests read it)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    aborted: int = 0  # streams the gateway stopped reading before their end
    completed: int = 0

    def last(self) -> dict[str, Any]:
        return self.requests[-1]


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    if isinstance(value, dict):
        return sum(_chars(v) for k, v in value.items() if k not in ("role", "type", "id"))
    return 0


def _prompt_tokens(body: dict[str, Any]) -> int:
    chars = _chars(body.get("messages")) + _chars(body.get("system")) + _chars(body.get("prompt"))
    chars += _chars(body.get("input"))
    return max(1, -(-chars // 4))


def _instruction(body: dict[str, Any]) -> str:
    msgs = body.get("messages") or []
    if msgs:
        content = msgs[-1].get("content")
        return content if isinstance(content, str) else json.dumps(content)
    return str(body.get("prompt") or body.get("input") or "")


def _words(text: str) -> int:
    for part in text.split():
        if part.startswith("words:"):
            return int(part[6:])
    return 3


def build_app(seen: Seen) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        seen.requests.append(
            {
                "path": request.url.path,
                "headers": dict(request.headers),
                "body": body,
                "method": request.method,
            }
        )
        return body if isinstance(body, dict) else {}

    async def pieces(n: int, slow: bool) -> AsyncIterator[int]:
        try:
            for i in range(n):
                if slow:
                    await asyncio.sleep(0.02)
                yield i
            seen.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            seen.aborted += 1
            raise

    async def chat(request: Request) -> Response:
        body = await record(request)
        text = _instruction(body)
        if "fail" in text:
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, status_code=500)
        if "hang" in text:  # until the caller gives up (at most a minute)
            for _ in range(3000):
                if await request.is_disconnected():
                    break
                await asyncio.sleep(0.02)
        n, pt = _words(text), _prompt_tokens(body)
        completions = request.url.path.endswith("/v1/completions")
        if not body.get("stream"):
            out = PIECE * n
            choice: dict[str, Any] = (
                {"index": 0, "text": out, "finish_reason": "stop"}
                if completions
                else {"index": 0, "message": {"role": "assistant", "content": out}, "finish_reason": "stop"}
            )
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "text_completion" if completions else "chat.completion",
                    "model": body.get("model"),
                    "choices": [choice],
                    "usage": {"prompt_tokens": pt, "completion_tokens": n, "total_tokens": pt + n},
                }
            )
        usage = (body.get("stream_options") or {}).get("include_usage") is True

        async def events() -> AsyncIterator[bytes]:
            async for i in pieces(n, "slow" in text):
                if "break" in text and i == 3:
                    raise RuntimeError("the upstream crashes mid-stream")
                delta = {"text": PIECE} if completions else {"delta": {"content": PIECE}}
                chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, **delta}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            if usage:
                last = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": {"prompt_tokens": pt, "completion_tokens": n, "total_tokens": pt + n},
                }
                yield f"data: {json.dumps(last)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = await record(request)
        pt = _prompt_tokens(body)
        return JSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "model": body.get("model"),
                "usage": {"prompt_tokens": pt, "total_tokens": pt},
            }
        )

    async def messages(request: Request) -> Response:
        body = await record(request)
        text = _instruction(body)
        if "fail" in text:
            return JSONResponse(
                {"type": "error", "error": {"type": "api_error", "message": "boom"}}, status_code=500
            )
        n, pt = _words(text), _prompt_tokens(body)
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model"),
                    "content": [{"type": "text", "text": PIECE * n}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": pt, "output_tokens": n},
                }
            )

        def ev(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            yield ev(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "content": [],
                        "model": body.get("model"),
                        "usage": {"input_tokens": pt, "output_tokens": 1},
                    },
                },
            )
            yield ev(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            async for _ in pieces(n, "slow" in text):
                yield ev(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": PIECE},
                    },
                )
            yield ev("content_block_stop", {"type": "content_block_stop", "index": 0})
            yield ev(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": n},
                },
            )
            yield ev("message_stop", {"type": "message_stop"})

        return StreamingResponse(events(), media_type="text/event-stream")

    async def item(request: Request) -> Response:
        await record(request)
        return JSONResponse({"id": request.path_params["id"], "query": str(request.url.query)})

    async def create_item(request: Request) -> Response:
        body = await record(request)
        return JSONResponse({"created": body}, status_code=201)

    async def status(request: Request) -> Response:
        await record(request)
        return JSONResponse({"status": "as asked"}, status_code=int(request.path_params["code"]))

    async def chunks(request: Request) -> Response:
        await record(request)

        async def gen() -> AsyncIterator[bytes]:
            async for i in pieces(int(request.query_params.get("n", "5")), "slow" in request.url.query):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(gen(), media_type="text/plain")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/items/{id}", item, methods=["GET"]),
            Route("/items", create_item, methods=["POST"]),
            Route("/status/{code:int}", status, methods=["GET"]),
            Route("/chunks", chunks, methods=["GET"]),
        ]
    )


@contextmanager
def serve(app: Any, *, lifespan: Literal["on", "off"] = "off") -> Iterator[str]:
    """``app`` served by real uvicorn in a thread, on a free port, for the block: its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan=lifespan,
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
