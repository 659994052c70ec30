"""Bounded spend while streaming: many concurrent streams against a small balance. A stream
grows its reservation in increments as tokens flow and is cut with an SSE error event when the
wallet cannot cover the next one; the wallet is never overdrawn, every credit granted is either
still in the wallet or was charged, and each stream is charged exactly for what reached its
client (the usage of a whole answer, the estimator's count of a cut one)."""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.gateway.http.conftest import Gateway, balance, customer
from tests.gateway.http.fake_upstream import PIECE
from tollkeep.runtime import Tollkeep

STREAMS = int(os.environ.get("TK_GATEWAY_STREAMS", "20"))  # more: TK_GATEWAY_STREAMS=200
WORDS = 100
GRANTED = 400


def one_stream(url: str, key: str, kind: str) -> dict[str, object]:
    """Run one stream; what its client received."""
    text = f"words:{WORDS}"
    if kind == "openai":
        path, body = (
            "/v1/chat/completions",
            {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": text}]},
        )
    else:
        path, body = (
            "/v1/messages",
            {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": text}]},
        )
    pieces, usage, error = 0, None, None
    with (
        httpx.Client(base_url=url, timeout=60) as c,
        c.stream("POST", path, headers={"Authorization": f"Bearer {key}"}, json=body) as r,
    ):
        if r.status_code == 402:
            r.read()
            return {"pieces": 0, "usage": None, "error": "refused", "prompt": text}
        assert r.status_code == 200
        raw = r.read().decode()
    for block in raw.split("\n\n"):
        lines = block.split("\n")
        name = next((ln[6:].strip() for ln in lines if ln.startswith("event:")), None)
        data = "".join(ln[5:].strip() for ln in lines if ln.startswith("data:"))
        if not data or data == "[DONE]":
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            continue  # a piece cut short by the end of the stream: it never reached the client whole
        if name == "error":
            error = obj["error"]["code"]
        elif kind == "openai":
            pieces += sum(len(ch["delta"].get("content", "")) for ch in obj.get("choices", [])) // len(PIECE)
            usage = obj.get("usage") or usage
        elif obj.get("type") == "content_block_delta":
            pieces += len(obj["delta"]["text"]) // len(PIECE)
        elif obj.get("type") == "message_delta":
            usage = obj["usage"]
    return {"pieces": pieces, "usage": usage, "error": error, "prompt": text}


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_concurrent_streams_never_overspend(gtk: Tollkeep, gateway: Gateway, kind: str) -> None:
    cid, key = customer(gtk, credits=GRANTED)
    with gateway(increment_tokens=8) as url, ThreadPoolExecutor(STREAMS) as pool:
        results = list(pool.map(lambda _: one_stream(url, key, kind), range(STREAMS)))
        left = balance(gtk, cid)
    assert left >= 0
    expected = 0
    for res in results:
        prompt = max(1, math.ceil(len(str(res["prompt"])) / 4))
        if res["error"] == "refused":
            continue
        if res["error"] is None:  # whole: the reported usage
            assert res["pieces"] == WORDS and res["usage"] is not None
            expected += prompt + 2 * WORDS
        else:
            assert res["error"] == "insufficient_credits"
            assert int(res["pieces"]) < WORDS  # type: ignore[call-overload]
            expected += prompt + 2 * int(res["pieces"])  # type: ignore[call-overload]
    assert any(res["error"] == "insufficient_credits" for res in results)
    # conservation: what was granted is in the wallet or was charged, for what was delivered
    assert GRANTED - left == expected
