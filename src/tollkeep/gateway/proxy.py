"""The HTTP gateway's plumbing, no money: which headers cross, and which price a path has.

* Hop-by-hop headers (RFC 9110 §7.6.1: ``Connection`` and the headers it names,
  ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``) never
  cross, either way; nor does ``Host`` (httpx sets the upstream's).
* The caller's credentials (``Authorization``, ``X-API-Key``, ``X-Install-Id``) and the
  gateway's own ``Idempotency-Key`` are stripped from what goes upstream; the upstream's own
  credentials (``--upstream-header``) are added instead.
* :class:`RouteTable` turns ``method`` + ``path`` into the first matching :class:`Route`
  (patterns: literal segments, ``{name}`` for one segment, a trailing ``*`` for the rest).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tollkeep.catalog import Route

__all__ = [
    "HOP_BY_HOP",
    "RouteTable",
    "Upstream",
    "parse_header",
    "parse_price",
    "request_headers",
    "response_headers",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
CALLER_ONLY = frozenset({b"authorization", b"x-api-key", b"x-install-id", b"idempotency-key", b"host"})


def _named_by_connection(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    out: set[bytes] = set()
    for k, v in headers:
        if k.lower() == b"connection":
            out.update(p.strip().lower() for p in v.split(b",") if p.strip())
    return out


def request_headers(
    raw: Sequence[tuple[bytes, bytes]], inject: Sequence[tuple[bytes, bytes]], *, drop_length: bool = False
) -> list[tuple[bytes, bytes]]:
    """The headers a caller's request carries upstream: no hop-by-hop, no caller credentials,
    the upstream's own credentials added (replacing any of the same name)."""
    named = _named_by_connection(raw)
    replaced = {k.lower() for k, _ in inject}
    out = []
    for k, v in raw:
        lk = k.lower()
        if lk in HOP_BY_HOP or lk in CALLER_ONLY or lk in named or lk in replaced:
            continue
        if drop_length and lk == b"content-length":
            continue
        out.append((lk, v))
    out.extend(inject)
    return out


def response_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers of an upstream answer the caller gets (no hop-by-hop; the body is re-framed
    by our server, so no ``Content-Length`` either when it was decoded)."""
    named = _named_by_connection(raw)
    return [(k.lower(), v) for k, v in raw if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def parse_header(text: str) -> tuple[bytes, bytes]:
    """``"Name: value"`` (``--upstream-header``)."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name.strip()):
        raise ValueError(f"expected 'Name: value', got {text!r}")
    return name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")


def parse_price(text: str) -> Route:
    """``"METHOD /path/pattern=CREDITS"`` (``--price``); ``METHOD`` may be ``*``."""
    left, sep, amount = text.rpartition("=")
    method, _, pattern = left.strip().partition(" ")
    pattern = pattern.strip()
    if not sep or not pattern.startswith("/") or not amount.strip().isdigit():
        raise ValueError(f"expected 'METHOD /path/pattern=CREDITS' (e.g. 'GET /v1/search=2'), got {text!r}")
    method = method.upper()
    if not re.fullmatch(r"\*|[A-Z]+", method):
        raise ValueError(f"bad method {method!r} in {text!r}")
    return Route(method=method, path=pattern, price=int(amount.strip()))


def _compile(pattern: str) -> re.Pattern[str]:
    rest = pattern.endswith("*")
    body = pattern[:-1] if rest else pattern
    parts = re.split(r"(\{[^/{}]+\})", body)
    rx = "".join("[^/]+" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts)
    return re.compile(rx + (".*" if rest else "") + r"\Z")


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str  # base URL, no trailing slash
    headers: tuple[tuple[bytes, bytes], ...] = ()


class RouteTable:
    """The first route (in order) whose method and path pattern match."""

    def __init__(self, routes: Iterable[Route], upstream: str | None = None) -> None:
        self.routes = tuple(r for r in routes if r.upstream is None or r.upstream == upstream)
        self._compiled = [(r, _compile(r.path)) for r in self.routes]

    def match(self, method: str, path: str) -> Route | None:
        for route, rx in self._compiled:
            if (route.method == "*" or route.method == method) and rx.match(path):
                return route
        return None
