"""LLM endpoints through the HTTP gateway: charged by the model's token prices on the usage the
upstream reports (``test-model``: 1 credit per input token, 2 per output token), streams
passed through with usage asked for, upstream errors released, a client that goes away
mid-stream charged for what was produced."""

from __future__ import annotations

import json
import math
import socket

import httpx

from tests.factories import eventually
from tests.gateway.http.conftest import Gateway, balance, customer
from tests.gateway.http.fake_upstream import PIECE, Seen
from tollkeep.runtime import Tollkeep


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(text: str, **kw: object) -> dict[str, object]:
    return {"model": "test-model", "messages": [{"role": "user", "content": text}], **kw}


def prompt_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def sse_events(body: str) -> list[tuple[str | None, str]]:
    out = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        out.append((name, "\n".join(data)))
    return out


def test_chat_completion_is_charged_on_reported_usage(gtk: Tollkeep, gateway: Gateway, seen: Seen) -> None:
    cid, key = customer(gtk, credits=1000)
    text = "hello there words:10"
    with gateway() as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/chat/completions", headers=auth(key), json=chat(text, max_tokens=50))
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 10
        assert balance(gtk, cid) == 1000 - (prompt_tokens(text) + 2 * 10)
        # legacy completions and embeddings
        r = c.post(
            "/v1/completions",
            headers=auth(key),
            json={"model": "test-model", "prompt": "words:4", "max_tokens": 10},
        )
        assert r.status_code == 200
        spent = prompt_tokens(text) + 20 + prompt_tokens("words:4") + 8
        assert balance(gtk, cid) == 1000 - spent
        r = c.post("/v1/embeddings", headers=auth(key), json={"model": "test-model", "input": "x" * 40})
        assert r.status_code == 200
        assert balance(gtk, cid) == 1000 - spent - 10
    assert seen.last()["headers"]["accept-encoding"] == "identity"


def test_anthropic_messages_json_and_stream(gtk: Tollkeep, gateway: Gateway) -> None:
    cid, key = customer(gtk, credits=1000)
    body = {"model": "test-model", "max_tokens": 100, "messages": [{"role": "user", "content": "words:7"}]}
    with gateway() as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/messages", headers={"X-API-Key": key, "anthropic-version": "2023-06-01"}, json=body)
        assert r.status_code == 200 and r.json()["usage"] == {"input_tokens": 2, "output_tokens": 7}
        assert balance(gtk, cid) == 1000 - (2 + 14)
        with c.stream("POST", "/v1/messages", headers=auth(key), json={**body, "stream": True}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r.read().decode())
        names = [n for n, _ in events]
        assert names[0] == "message_start" and names[-1] == "message_stop"
        assert names.count("content_block_delta") == 7
        assert balance(gtk, cid) == 1000 - 2 * (2 + 14)


def test_openai_stream_asks_for_usage_and_is_charged_on_it(
    gtk: Tollkeep, gateway: Gateway, seen: Seen
) -> None:
    cid, key = customer(gtk, credits=1000)
    text = "words:12"
    with (
        gateway() as url,
        httpx.Client(base_url=url) as c,
        c.stream("POST", "/v1/chat/completions", headers=auth(key), json=chat(text, stream=True)) as r,
    ):
        assert r.status_code == 200
        events = sse_events(r.read().decode())
    assert seen.last()["body"]["stream_options"] == {"include_usage": True}
    datas = [d for _, d in events]
    assert datas[-1] == "[DONE]"
    contents = [
        json.loads(d)["choices"][0]["delta"]["content"] for d in datas[:-1] if json.loads(d)["choices"]
    ]
    assert "".join(contents) == PIECE * 12
    assert json.loads(datas[-2])["usage"]["completion_tokens"] == 12  # the usage chunk reaches the client
    assert balance(gtk, cid) == 1000 - (prompt_tokens(text) + 24)


def test_upstream_error_and_unknown_model_are_not_charged(
    gtk: Tollkeep, gateway: Gateway, seen: Seen
) -> None:
    cid, key = customer(gtk, credits=100)
    with gateway() as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/chat/completions", headers=auth(key), json=chat("please fail", max_tokens=10))
        assert r.status_code == 500 and r.json()["error"]["message"] == "boom"
        r = c.post("/v1/messages", headers=auth(key), json=chat("fail", max_tokens=10, stream=True))
        assert r.status_code == 500
        r = c.post("/v1/chat/completions", headers=auth(key), content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        # the hold is sized to the request: input + max_tokens x the output price
        r = c.post("/v1/chat/completions", headers=auth(key), json=chat("words:1", max_tokens=60))
        assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_credits"
        assert "topup" in r.json()["error"]
        n = len(seen.requests)
        assert balance(gtk, cid) == 100
    with gateway(upstream_url="http://127.0.0.1:9") as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/chat/completions", headers=auth(key), json=chat("words:1", max_tokens=5))
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
    assert len(seen.requests) == n
    assert balance(gtk, cid) == 100


def test_unknown_model_without_default_price_is_refused(
    gtk: Tollkeep, gateway: Gateway, tmp_path: object
) -> None:
    cid, key = customer(gtk, credits=100)
    with gateway(llm_meter="api_call") as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/chat/completions", headers=auth(key), json=chat("hi"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_llm_meter"
    assert balance(gtk, cid) == 100


def test_client_gone_mid_stream_pays_what_was_produced(gtk: Tollkeep, gateway: Gateway, seen: Seen) -> None:
    cid, key = customer(gtk, credits=5000)
    text = "slow words:1000"
    full = prompt_tokens(text) + 2 * 1000
    with gateway() as url, httpx.Client(base_url=url) as c:
        with c.stream(
            "POST", "/v1/chat/completions", headers=auth(key), json=chat(text, stream=True, max_tokens=1000)
        ) as r:
            got = 0
            for line in r.iter_lines():
                if line.startswith("data:"):
                    got += 1
                if got == 5:
                    break  # leave: the connection closes with the block
        assert eventually(lambda: seen.aborted == 1, timeout=30)  # the gateway stopped reading upstream
        spent = 5000 - balance(gtk, cid)
    # charged: the prompt and the pieces produced until the gateway saw the client go (at
    # least the 5 read), far from the full answer
    assert prompt_tokens(text) + 2 * 5 <= spent < full
    assert (spent - prompt_tokens(text)) % 2 == 0
    assert seen.completed == 0


def test_upstream_that_hangs_or_breaks_off_is_not_charged(
    gtk: Tollkeep, gateway: Gateway, seen: Seen
) -> None:
    cid, key = customer(gtk, credits=1000)
    with gateway(read_timeout=0.5) as url, httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/v1/chat/completions", headers=auth(key), json=chat("hang", max_tokens=10))
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        with c.stream(
            "POST", "/v1/chat/completions", headers=auth(key), json=chat("break words:10", stream=True)
        ) as s:
            events = sse_events(s.read().decode())
        assert events[-1][0] == "error"
        assert json.loads(events[-1][1])["error"]["code"] == "upstream_error"
    assert balance(gtk, cid) == 1000


def test_client_gone_before_the_answer_is_not_charged(gtk: Tollkeep, gateway: Gateway, seen: Seen) -> None:
    cid, key = customer(gtk, credits=1000)
    body = json.dumps(chat("hang", max_tokens=10)).encode()
    with gateway() as url:
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        # a raw connection, closed once the upstream has the request (a client timeout would
        # race the gateway on a slow machine)
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert eventually(lambda: len(seen.requests) == 1, timeout=30)
        # released once the gateway saw the client go
        assert eventually(lambda: balance(gtk, cid) == 1000, timeout=30)


def test_llm_retry_with_an_idempotency_key_is_charged_once(
    gtk: Tollkeep, gateway: Gateway, seen: Seen
) -> None:
    cid, key = customer(gtk, credits=1000)
    body = chat("words:5", max_tokens=20)
    with gateway() as url, httpx.Client(base_url=url) as c:
        h = {**auth(key), "Idempotency-Key": "run-1/step-1"}
        assert c.post("/v1/chat/completions", headers=h, json=body).status_code == 200
        r = c.post("/v1/chat/completions", headers=h, json=body)
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_used"
        r = c.post("/v1/chat/completions", headers=h, json=chat("words:6", max_tokens=20))
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"
        # while a call runs, its retry is refused (the client of the first gives up later)
        h2 = {**auth(key), "Idempotency-Key": "run-1/step-2"}
        slow = chat("slow words:100", max_tokens=200, stream=True)
        with c.stream("POST", "/v1/chat/completions", headers=h2, json=slow) as first:
            assert first.status_code == 200
            r = c.post("/v1/chat/completions", headers=h2, json=slow)
            assert r.status_code == 409 and r.json()["error"]["code"] == "request_in_progress"
            first.read()
    assert len(seen.requests) == 2
    assert balance(gtk, cid) == 1000 - (2 + 10) - (4 + 200)
