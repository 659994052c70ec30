"""The gateway's pure parts: LLM request estimates, usage extractors, the SSE meter (whatever
the chunk boundaries), route patterns, the headers that cross."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from tollkeep.gateway.llm import StreamMeter, ask_for_usage, llm_kind, parse_request, usage_of
from tollkeep.gateway.proxy import RouteTable, parse_header, parse_price, request_headers


def sse(*events: tuple[str | None, dict[str, object]]) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += f"event: {name}\n".encode()
        out += (
            f"data: {json.dumps(data)}\r\n\r\n".encode()
            if name == "crlf"
            else f"data: {json.dumps(data)}\n\n".encode()
        )
    return out


ANTHROPIC = sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {"usage": {"input_tokens": 11, "cache_read_input_tokens": 4, "output_tokens": 1}},
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hello world!"}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
    ),
    ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
)


@given(st.lists(st.integers(min_value=0, max_value=len(ANTHROPIC)), max_size=8))
def test_stream_meter_ignores_chunk_boundaries(cuts: list[int]) -> None:
    meter = StreamMeter("anthropic")
    edges = [0, *sorted(cuts), len(ANTHROPIC)]
    for a, b in itertools.pairwise(edges):
        meter.feed(ANTHROPIC[a:b])
    assert meter.output_chars == len("hello world!") + len('{"a":')
    assert (meter.input_tokens, meter.output_tokens) == (15, 9)
    assert meter.reported and meter.produced_tokens() == 9


def test_openai_and_responses_streams() -> None:
    m = StreamMeter("chat")
    m.feed(sse((None, {"choices": [{"delta": {"role": "assistant", "content": "abcdefgh"}}]})))
    m.feed(b"data: [DONE]\n\n")
    assert m.output_chars == 8 and not m.reported and m.produced_tokens() == 2
    m.feed(sse((None, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}})))
    assert (m.input_tokens, m.output_tokens) == (3, 5)
    r = StreamMeter("responses")
    r.feed(sse(("response.output_text.delta", {"type": "response.output_text.delta", "delta": "abc"})))
    r.feed(
        sse(
            (
                "response.completed",
                {
                    "type": "response.completed",
                    "response": {"usage": {"input_tokens": 7, "output_tokens": 2}},
                },
            )
        )
    )
    assert r.output_chars == 3 and (r.input_tokens, r.output_tokens) == (7, 2)
    c = StreamMeter("completions")
    c.feed(b'data: {"choices": [{"text": "abcde"}]}\r\n\r\n')
    assert c.output_chars == 5


def test_requests_and_usage() -> None:
    assert llm_kind("POST", "/openai/v1/chat/completions") == "chat"
    assert llm_kind("GET", "/v1/chat/completions") is None
    assert llm_kind("POST", "/v1/messages") == "anthropic"
    r = parse_request(
        "chat",
        {"model": "m", "messages": [{"role": "user", "content": "x" * 40}], "max_completion_tokens": 7},
    )
    assert (r.model, r.max_tokens, r.input_tokens, r.stream) == ("m", 7, 10, False)
    r = parse_request(
        "anthropic", {"model": "m", "system": "abcd", "messages": [], "max_tokens": 5, "stream": True}
    )
    assert (r.input_tokens, r.max_tokens, r.stream) == (1, 5, True)
    r = parse_request("responses", {"model": "m", "input": "abcdefgh", "max_output_tokens": 3})
    assert (r.input_tokens, r.max_tokens) == (2, 3)
    assert parse_request("embeddings", {"model": "m", "input": ["abcd", "efgh"]}).max_tokens == 0
    body: dict[str, object] = {"stream": True, "stream_options": {"x": 1}}
    assert ask_for_usage("chat", body) and body["stream_options"] == {"x": 1, "include_usage": True}
    assert not ask_for_usage("chat", body) and not ask_for_usage("anthropic", {"stream": True})
    assert usage_of(b'{"usage": {"prompt_tokens": 2, "completion_tokens": 3}}') is not None
    assert usage_of(b"not json") is None and usage_of(b"[1]") is None


def test_routes_and_headers() -> None:
    table = RouteTable(
        [parse_price("GET /v1/items/{id}=2"), parse_price("* /v1/files/*=5"), parse_price("POST /v1/items=1")]
    )
    assert table.match("GET", "/v1/items/9").price == 2  # type: ignore[union-attr]
    assert table.match("GET", "/v1/items/9/more") is None
    assert table.match("DELETE", "/v1/files/a/b").price == 5  # type: ignore[union-attr]
    assert table.match("GET", "/v1/items") is None
    assert table.match("POST", "/v1/items").price == 1  # type: ignore[union-attr]
    for bad in ("GET /x", "GET x=1", "/x=1", "GET /x=-1", "G3T /x=1"):
        try:
            parse_price(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    raw = [
        (b"Host", b"gw"),
        (b"Authorization", b"Bearer tk_live_x"),
        (b"Connection", b"close, X-Secret"),
        (b"X-Secret", b"s"),
        (b"Content-Length", b"3"),
        (b"X-Keep", b"1"),
    ]
    out = request_headers(raw, [parse_header("Authorization: Bearer up")])
    assert out == [(b"content-length", b"3"), (b"x-keep", b"1"), (b"authorization", b"Bearer up")]
