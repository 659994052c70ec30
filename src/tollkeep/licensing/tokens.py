"""Signing a licence key: a compact JWS, header ``{"alg": "EdDSA", "typ": "JWT", "kid"}``, the
claims as compact JSON with sorted keys, an Ed25519 signature (deterministic: the same key and
claims always give the same token, which is what lets the test vectors pin exact strings)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tollkeep.licensing.verify import b64url_encode

__all__ = ["sign"]


def _part(obj: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())


def sign(claims: Mapping[str, Any], key: Ed25519PrivateKey, kid: str) -> str:
    signing_input = f"{_part({'alg': 'EdDSA', 'typ': 'JWT', 'kid': kid})}.{_part(claims)}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"
