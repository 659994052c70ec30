"""Offline verification of tollkeep licence keys — vendor this one file into your app.

A licence key is a compact JWS (a JWT) signed with EdDSA over Ed25519; its header names the
signing key (``kid``), so any JOSE library in any language can verify it with the seller's
public keys (``GET /v1/licenses/jwks``). This module needs only the standard library and
``cryptography``; it does not import anything else from tollkeep::

    from tollkeep.licensing.verify import verify, keys_from_jwks

    keys = keys_from_jwks(json.load(open("jwks.json")))   # ship the JWKS with your app
    lic = verify(license_key, keys)                        # raises LicenseInvalid
    if "export" in lic.entitlements: ...

Claims: ``lid`` licence id, ``sub`` customer id, ``plan``, ``entitlements`` (list of feature
names), ``max_machines`` (int or null), ``iat``, ``exp`` (absent: never expires), ``grace``
(seconds an offline machine may go without an online check-in), ``ver`` (the licence's key
version: a plan change re-issues the same ``lid`` with a higher ``ver``), ``iss``.

``LicenseInvalid.code`` is one of: ``malformed``, ``unsupported_algorithm``, ``unknown_key``,
``bad_signature``, ``expired``, ``not_yet_valid``. Test vectors: docs/licensing-test-vectors.json.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["License", "LicenseInvalid", "b64url_decode", "b64url_encode", "keys_from_jwks", "verify"]

MAX_TOKEN_CHARS = 8192


class LicenseInvalid(Exception):
    """The key is not a valid licence: ``code`` says why (stable, for programs)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class License:
    """A verified licence key's claims."""

    lid: str
    sub: str
    plan: str
    entitlements: tuple[str, ...]
    max_machines: int | None
    iat: int
    exp: int | None
    grace: int
    ver: int
    kid: str
    claims: Mapping[str, Any] = field(hash=False, compare=False)

    def has(self, entitlement: str) -> bool:
        return entitlement in self.entitlements


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_NOT_B64URL = re.compile(r"[=+/ \n]").search
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PAD = ("", "=", "==", "===")


def b64url_decode(text: str) -> bytes:
    # what base64.urlsafe_b64decode does (ASCII only, then - and _ to + and /, non-strict
    # decoding), inlined: it runs three times per verified key
    if not isinstance(text, str) or _NOT_B64URL(text) is not None:
        raise LicenseInvalid("malformed", "not base64url")
    try:
        return binascii.a2b_base64((text + _PAD[-len(text) % 4]).encode("ascii").translate(_FROM_URLSAFE))
    except (binascii.Error, ValueError):
        raise LicenseInvalid("malformed", "not base64url") from None


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 public keys of a JWKS (``{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid",
    "x"}]}``) by key id; other key types are skipped."""
    out: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk and "x" in jwk:
            out[str(jwk["kid"])] = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    return out


_json_decode = json.JSONDecoder().decode  # what json.loads uses for a str without options


def _json_part(part: str) -> dict[str, Any]:
    raw = b64url_decode(part)
    try:
        # UTF-8 (what json.loads detects for bytes starting "{" then a non-NUL byte), decoded as
        # json.loads decodes bytes; anything else (BOMs, UTF-16/32) through json.loads itself
        if raw[:1] == b"{" and raw[1:2] != b"\x00":
            value = _json_decode(raw.decode("utf-8", "surrogatepass"))
        else:
            value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise LicenseInvalid("malformed", "a part is not JSON") from None
    if not isinstance(value, dict):
        raise LicenseInvalid("malformed", "a part is not a JSON object")
    return value


def _split(token: str) -> list[str]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise LicenseInvalid("malformed", "not a licence key")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise LicenseInvalid("malformed", "a licence key has three dot-separated parts")
    return parts


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims WITHOUT checking the signature (to read ``kid`` or show a licence)."""
    parts = _split(token)
    return _json_part(parts[0]), _json_part(parts[1])


def _int(claims: Mapping[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = claims.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise LicenseInvalid("malformed", f"claim {name!r} must be an integer")
    return value


def verify(
    token: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    now: float | None = None,
    leeway: int = 60,
) -> License:
    """Check ``token``'s signature with the key its header names, then its times (``leeway``
    seconds of clock skew allowed). Returns the claims; raises :class:`LicenseInvalid`."""
    head, body, sig = _split(token)
    header, claims = _json_part(head), _json_part(body)
    if header.get("alg") != "EdDSA":
        raise LicenseInvalid("unsupported_algorithm", "licence keys are signed with EdDSA (Ed25519)")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise LicenseInvalid("unknown_key", f"no public key with kid {kid!r}: refresh the JWKS")
    try:
        key.verify(b64url_decode(sig), f"{head}.{body}".encode("ascii"))
    except InvalidSignature:
        raise LicenseInvalid("bad_signature", "the signature does not match") from None
    at = time.time() if now is None else now
    exp = _int(claims, "exp", optional=True)
    if exp is not None and at > exp + leeway:
        raise LicenseInvalid("expired", "the licence has expired")
    nbf = _int(claims, "nbf", optional=True)
    if nbf is not None and at < nbf - leeway:
        raise LicenseInvalid("not_yet_valid", "the licence is not valid yet")
    ents = claims.get("entitlements", [])
    if not isinstance(ents, list) or not all(isinstance(e, str) for e in ents):
        raise LicenseInvalid("malformed", "claim 'entitlements' must be a list of strings")
    for name in ("lid", "sub", "plan"):
        if not isinstance(claims.get(name), str):
            raise LicenseInvalid("malformed", f"claim {name!r} must be a string")
    return License(
        lid=claims["lid"],
        sub=claims["sub"],
        plan=claims["plan"],
        entitlements=tuple(ents),
        max_machines=_int(claims, "max_machines", optional=True),
        iat=_int(claims, "iat") or 0,
        exp=exp,
        grace=_int(claims, "grace", optional=True) or 0,
        ver=_int(claims, "ver", optional=True) or 1,
        kid=str(kid),
        claims=claims,
    )
