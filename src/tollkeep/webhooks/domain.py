"""The webhooks domain's rules, pure: no database, no network, no framework.

Which events an endpoint takes, the retry schedule, when an endpoint is given up on, what an
address may be, the message body and the signing secret's format.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_SCHEDULE",
    "SECRET_PREFIX",
    "TEST_TOPIC",
    "ParsedUrl",
    "address_refusal",
    "after_failure",
    "message_body",
    "new_secret",
    "normalize_events",
    "parse_url",
    "should_disable",
    "topic_matches",
]

SECRET_PREFIX = "whsec_"
TEST_TOPIC = "webhook.test"
# Standard Webhooks' recommendation: after the first attempt fails, retry after 5 s, 5 min,
# 30 min, 2 h, 5 h, 10 h and 10 h (8 attempts over about 28 hours), then give up
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_EVENTS = 64
_TOPIC_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?$")


class RuleError(ValueError):
    """A rule refused its input: ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- secrets and messages -------------------------------------------------------------------------
def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes: the Standard Webhooks secret format."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def message_body(topic: str, created_at: str, payload: dict[str, Any]) -> str:
    """The JSON sent, the same on every attempt (Standard Webhooks' payload structure)."""
    return json.dumps({"type": topic, "timestamp": created_at, "data": payload}, separators=(",", ":"))


# ---- which events ---------------------------------------------------------------------------------
def topic_matches(events: Sequence[str] | None, topic: str) -> bool:
    """Does an endpoint subscribed to ``events`` (None: all) take ``topic``? ``credits.*`` takes
    every ``credits.…`` topic. ``webhook.test`` goes only where it is sent, never by fan-out."""
    if topic == TEST_TOPIC:
        return False
    if events is None:
        return True
    for pattern in events:
        if pattern == topic or (pattern.endswith(".*") and topic.startswith(pattern[:-1])):
            return True
    return False


def normalize_events(events: Iterable[str] | None, known: Iterable[str]) -> list[str] | None:
    """The event list an endpoint stores: None (every event), or known topics and ``prefix.*``
    patterns that match at least one, without repeats. An empty list is refused (use null)."""
    if events is None:
        return None
    if isinstance(events, str):
        raise RuleError("invalid_webhook_events", "events must be a list of event types, or null for all")
    topics = set(known)
    out: list[str] = []
    for e in events:
        if not isinstance(e, str) or not _TOPIC_RE.match(e) or len(e) > 64:
            raise RuleError("invalid_webhook_events", f"{e!r} is not an event type")
        if e.endswith(".*"):
            if not any(t.startswith(e[:-1]) for t in topics):
                raise RuleError("invalid_webhook_events", f"{e!r} matches no event type")
        elif e not in topics:
            raise RuleError(
                "invalid_webhook_events", f"unknown event type {e!r} (known: {', '.join(sorted(topics))})"
            )
        if e not in out:
            out.append(e)
    if not out:
        raise RuleError("invalid_webhook_events", "events must not be empty (null: every event)")
    if len(out) > MAX_EVENTS:
        raise RuleError("invalid_webhook_events", f"at most {MAX_EVENTS} event types")
    return out


# ---- retries and giving up ---------------------------------------------------------------------------
def after_failure(
    attempts_in_round: int, now: datetime, schedule: Sequence[float] = DEFAULT_SCHEDULE
) -> datetime | None:
    """When to try again after attempt ``attempts_in_round`` (1, 2, …) of a round failed; None:
    the schedule is spent and the delivery has failed."""
    if attempts_in_round < 1 or attempts_in_round > len(schedule):
        return None
    return now + timedelta(seconds=schedule[attempts_in_round - 1])


def should_disable(failing_since: datetime | None, now: datetime, after_seconds: float) -> bool:
    """An endpoint whose every attempt has failed for ``after_seconds`` (no success since
    ``failing_since``) is disabled."""
    return failing_since is not None and now - failing_since >= timedelta(seconds=after_seconds)


# ---- addresses (the SSRF guard's rules; resolving is guard.py's) -------------------------------------
@dataclass(frozen=True)
class ParsedUrl:
    scheme: str
    host: str  # a name, or an address without brackets
    port: int


def parse_url(url: str) -> ParsedUrl:
    """Check an endpoint URL's form: http(s), a host, no credentials, no fragment."""
    if not isinstance(url, str) or not url.strip() or len(url) > 2048:
        raise RuleError("webhook_url_invalid", "url must be an http(s) URL of at most 2048 characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise RuleError("webhook_url_invalid", "url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RuleError("webhook_url_invalid", f"url is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise RuleError("webhook_url_not_allowed", f"only http and https URLs are allowed, not {scheme!r}")
    if not parts.hostname:
        raise RuleError("webhook_url_invalid", "url has no host")
    if parts.username is not None or parts.password is not None:
        raise RuleError("webhook_url_invalid", "url must not carry credentials (user:password@)")
    if parts.fragment:
        raise RuleError("webhook_url_invalid", "url must not have a #fragment")
    return ParsedUrl(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why an endpoint must not be reached at ``address`` (None: it may). Loopback, private,
    link-local, multicast, reserved, unspecified and other non-global addresses are refused
    unless ``allow_private``; an IPv4 address inside IPv6 (mapped, 6to4, Teredo) is judged as
    the IPv4 address it carries."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            return address_refusal(str(inner), allow_private=allow_private)
    if ip.is_multicast or ip.is_unspecified:
        return f"{ip} is a {'multicast' if ip.is_multicast else 'unspecified'} address"
    if allow_private:
        return None
    for label, hit in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("non-public", not ip.is_global),
    ):
        if hit:
            return f"{ip} is a {label} address"
    return None
