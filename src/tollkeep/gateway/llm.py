"""LLM endpoints: what a request will cost at most, and what it did cost.

Pure (no I/O, no database): the HTTP gateway (``gateway/http.py``) calls it.

* :func:`llm_kind` tells an LLM endpoint from any other path: OpenAI-compatible
  ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses`` and
  Anthropic's ``/v1/messages`` (any prefix before them is allowed, so ``/openai/v1/...`` too).
* :func:`parse_request` reads the model, ``max_tokens`` (each API's spelling), whether it
  streams, and estimates the input tokens; :func:`ask_for_usage` adds
  ``stream_options.include_usage`` to an OpenAI stream request so the last chunk carries usage.
* :func:`usage_of` reads the ``usage`` of a JSON answer; :class:`StreamMeter` follows an SSE
  stream as its bytes pass: the text produced so far and the usage events (OpenAI's usage chunk,
  the Responses API's ``response.completed``, Anthropic's ``message_start`` / ``message_delta``).

**The estimator** (documented in docs/gateway-http.md): tokens ≈ ⌈characters / 4⌉ of the text
(the prompt's text for the input, the produced text for the output). It sizes holds and
prices a stream that ended before the upstream reported its usage (a client that went away,
an upstream that closed mid-stream); whenever the upstream reports usage, that is what is
charged. Anthropic's cache tokens (``cache_creation_input_tokens``, ``cache_read_input_tokens``)
count as input tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "LLM_PATHS",
    "LlmRequest",
    "StreamMeter",
    "Usage",
    "ask_for_usage",
    "estimate_tokens",
    "llm_kind",
    "parse_request",
    "usage_of",
]

CHARS_PER_TOKEN = 4

# path suffix -> kind
LLM_PATHS: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
    "/v1/messages": "anthropic",
}


def llm_kind(method: str, path: str) -> str | None:
    """The kind of LLM endpoint a request goes to (None: not one)."""
    if method != "POST":
        return None
    for suffix, kind in LLM_PATHS.items():
        if path.endswith(suffix):
            return kind
    return None


def estimate_tokens(chars: int) -> int:
    """⌈chars / 4⌉: the documented estimator."""
    return -(-chars // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LlmRequest:
    kind: str
    model: str | None
    stream: bool
    max_tokens: int | None
    input_tokens: int  # estimated


def _text_chars(value: Any) -> int:
    """Characters of the text in a prompt / messages / input value (strings anywhere in it)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_chars(v) for k, v in value.items() if k not in ("role", "type", "id"))
    return 0


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def parse_request(kind: str, body: dict[str, Any]) -> LlmRequest:
    """What the gateway needs of an LLM request body (a JSON object)."""
    model = body.get("model")
    if kind == "responses":
        max_tokens = _positive_int(body.get("max_output_tokens"))
        chars = _text_chars(body.get("input")) + _text_chars(body.get("instructions"))
    elif kind == "anthropic":
        max_tokens = _positive_int(body.get("max_tokens"))
        chars = _text_chars(body.get("messages")) + _text_chars(body.get("system"))
    elif kind == "embeddings":
        max_tokens = 0
        chars = _text_chars(body.get("input"))
    elif kind == "completions":
        max_tokens = _positive_int(body.get("max_tokens"))
        chars = _text_chars(body.get("prompt"))
    else:  # chat
        max_tokens = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))
        chars = _text_chars(body.get("messages"))
    if kind in ("chat", "anthropic", "responses"):
        chars += _text_chars(body.get("tools"))
    return LlmRequest(
        kind=kind,
        model=model if isinstance(model, str) else None,
        stream=body.get("stream") is True,
        max_tokens=max_tokens,
        input_tokens=max(1, estimate_tokens(chars)),
    )


def ask_for_usage(kind: str, body: dict[str, Any]) -> bool:
    """Make an OpenAI chat/completions stream end with a usage chunk
    (``stream_options.include_usage``); True when the body was changed."""
    if kind not in ("chat", "completions") or body.get("stream") is not True:
        return False
    opts = body.get("stream_options")
    if not isinstance(opts, dict):
        opts = {}
    if opts.get("include_usage") is True:
        return False
    body["stream_options"] = {**opts, "include_usage": True}
    return True


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _read_usage(u: Any) -> Usage | None:
    """OpenAI's (prompt/completion) or Anthropic's / Responses' (input/output) usage object."""
    if not isinstance(u, dict):
        return None
    if "input_tokens" in u or "output_tokens" in u:
        tin = _int(u.get("input_tokens"))
        tin += _int(u.get("cache_creation_input_tokens")) + _int(u.get("cache_read_input_tokens"))
        return Usage(tin, _int(u.get("output_tokens")))
    if "prompt_tokens" in u or "completion_tokens" in u:
        return Usage(_int(u.get("prompt_tokens")), _int(u.get("completion_tokens")))
    return None


def usage_of(body: bytes) -> Usage | None:
    """The ``usage`` of a (non-streamed) JSON answer; None when it has none."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    return _read_usage(data.get("usage"))


@dataclass
class StreamMeter:
    """Follows an SSE stream as its bytes pass (nothing is held back: bytes are only read).

    ``output_chars`` counts produced text; ``input_tokens`` / ``output_tokens`` hold what the
    upstream reported (None until it does; Anthropic reports output tokens as it goes)."""

    kind: str
    output_chars: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    _buf: bytes = field(default=b"", repr=False)

    def feed(self, chunk: bytes) -> None:
        buf = self._buf + chunk
        # events end with a blank line; lines may end with \n or \r\n
        while True:
            cut = buf.find(b"\n\n")
            alt = buf.find(b"\r\n\r\n")
            if cut < 0 and alt < 0:
                break
            if alt >= 0 and (cut < 0 or alt < cut):
                event, buf = buf[:alt], buf[alt + 4 :]
            else:
                event, buf = buf[:cut], buf[cut + 2 :]
            self._event(event)
        self._buf = buf[-1_048_576:]  # a runaway event without an end is not kept whole

    def _event(self, raw: bytes) -> None:
        data = b"\n".join(
            line[5:].lstrip(b" ")
            for line in raw.replace(b"\r\n", b"\n").split(b"\n")
            if line.startswith(b"data:")
        )
        if not data or data == b"[DONE]":
            return
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return
        if isinstance(obj, dict):
            self._observe(obj)

    def _observe(self, obj: dict[str, Any]) -> None:
        t = obj.get("type")
        if self.kind == "anthropic":
            if t == "content_block_delta":
                d = obj.get("delta") or {}
                if isinstance(d, dict):
                    self.output_chars += sum(
                        len(v) for k in ("text", "partial_json", "thinking") if isinstance(v := d.get(k), str)
                    )
            elif t == "message_start":
                u = _read_usage((obj.get("message") or {}).get("usage"))
                if u is not None:
                    self.input_tokens = u.input_tokens
                    self.output_tokens = u.output_tokens
            elif t == "message_delta":
                raw = obj.get("usage")
                if isinstance(raw, dict):
                    if "output_tokens" in raw:
                        self.output_tokens = _int(raw.get("output_tokens"))
                    u = _read_usage(raw)
                    if "input_tokens" in raw and u is not None:
                        self.input_tokens = u.input_tokens
            return
        if self.kind == "responses":
            if t == "response.output_text.delta" or (isinstance(t, str) and t.endswith(".delta")):
                d = obj.get("delta")
                if isinstance(d, str):
                    self.output_chars += len(d)
            elif t in ("response.completed", "response.incomplete", "response.failed"):
                u = _read_usage((obj.get("response") or {}).get("usage"))
                if u is not None:
                    self.input_tokens, self.output_tokens = u.input_tokens, u.output_tokens
            return
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if self.kind == "completions":
                text = choice.get("text")
                self.output_chars += len(text) if isinstance(text, str) else 0
            else:
                self.output_chars += _text_chars(choice.get("delta"))
        u = _read_usage(obj.get("usage"))
        if u is not None:
            self.input_tokens, self.output_tokens = u.input_tokens, u.output_tokens

    @property
    def reported(self) -> bool:
        """The upstream reported its usage (OpenAI's usage chunk; Anthropic's message_delta)."""
        return self.output_tokens is not None and self.input_tokens is not None

    def produced_tokens(self) -> int:
        """Output tokens so far: the upstream's count when it gave one, else the estimator's."""
        est = estimate_tokens(self.output_chars)
        return max(est, self.output_tokens or 0)
