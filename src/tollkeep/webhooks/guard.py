"""The SSRF guard: an endpoint's host is resolved (every A and AAAA record) when it is
registered and again before every send, and the send goes to an address that was checked.

Checking at registration alone would let a name that later resolves to 127.0.0.1 or
169.254.169.254 (DNS rebinding) reach the seller's own network; checking before the send but
letting the HTTP client resolve the name again would leave the same gap between the two
lookups. So a send connects to the checked address itself, with the original name in the
``Host`` header and, for https, as the TLS server name (SNI and certificate check).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tollkeep.kit.errors import InvalidInput
from tollkeep.webhooks.domain import ParsedUrl, RuleError, address_refusal, parse_url

__all__ = ["Resolver", "Target", "check_registration", "resolve_target", "system_resolver"]

# host, port -> the addresses the name resolves to (raises OSError when it does not)
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """Where one send goes: ``url`` names the checked address; ``host`` is the Host header and
    ``sni`` the TLS server name. ``refused`` says why nothing may be sent (then nothing is)."""

    url: str
    host: str = ""
    sni: str | None = None
    refused: str | None = None


def _invalid(exc: RuleError) -> InvalidInput:
    return InvalidInput(exc.message, code=exc.code)


def check_registration(url: str, *, allow_private: bool, resolver: Resolver) -> str:
    """The URL to store, or 422 ``webhook_url_invalid`` / ``webhook_url_not_allowed``. A host that
    does not resolve now is accepted (it is resolved again before every send, and refused then
    unless it resolves to an allowed address); one that resolves to any refused address is not."""
    try:
        parsed = parse_url(url)
        refusal = _refusal(parsed, allow_private=allow_private, resolver=resolver, unresolvable_ok=True)
    except RuleError as exc:
        raise _invalid(exc) from None
    if refusal is not None:
        raise InvalidInput(
            f"webhook URLs may not point at this address: {refusal} "
            "(TOLLKEEP_WEBHOOKS_ALLOW_PRIVATE=true allows private and loopback addresses)",
            code="webhook_url_not_allowed",
        )
    return url.strip()


def _refusal(
    parsed: ParsedUrl, *, allow_private: bool, resolver: Resolver, unresolvable_ok: bool
) -> str | None:
    addresses = _addresses(parsed, resolver)
    if addresses is None:
        return None if unresolvable_ok else f"{parsed.host} does not resolve"
    for address in addresses:
        why = address_refusal(address, allow_private=allow_private)
        if why is not None:
            return why if address == parsed.host else f"{parsed.host} resolves to {why}"
    return None


def _addresses(parsed: ParsedUrl, resolver: Resolver) -> list[str] | None:
    try:
        found = resolver(parsed.host, parsed.port)
    except (OSError, UnicodeError):
        return None
    return found or None


def resolve_target(url: str, *, allow_private: bool, resolver: Resolver) -> Target:
    """Where to send now: the URL rewritten to the first resolved address, if every address the
    host resolves to is allowed (a name with one refused address is refused as a whole)."""
    try:
        parsed = parse_url(url)
    except RuleError as exc:
        return Target(url, refused=exc.message)
    addresses = _addresses(parsed, resolver)
    if addresses is None:
        return Target(url, refused=f"{parsed.host} does not resolve")
    for address in addresses:
        why = address_refusal(address, allow_private=allow_private)
        if why is not None:
            return Target(url, refused=f"webhook_url_not_allowed: {why}")
    address = addresses[0].split("%", 1)[0]
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    sni = parsed.host if parsed.scheme == "https" else None
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return Target(pinned, host=host_header, sni=sni)
