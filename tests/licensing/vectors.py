"""The licence test vectors (docs/licensing-test-vectors.json): made from a fixed Ed25519 seed,
so regenerating them gives the same bytes (Ed25519 signatures are deterministic).

    python -m tests.licensing.vectors > docs/licensing-test-vectors.json
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tollkeep.licensing.tokens import sign
from tollkeep.licensing.verify import b64url_encode

SEED = bytes(range(32))  # a test key, public on purpose: never sign real licences with it
OTHER_SEED = bytes(range(32, 64))
KID = "lk_test_vectors_1"
NOW = 1_800_000_000  # the "now" every vector is checked at (2027-01-15T08:00:00Z)

BASE: dict[str, Any] = {
    "iss": "tollkeep",
    "lid": "lic_TESTVECTOR0001",
    "sub": "cus_TESTVECTOR0001",
    "plan": "pro",
    "entitlements": ["basic", "priority"],
    "max_machines": 3,
    "iat": NOW - 86_400,
    "grace": 604_800,
    "ver": 1,
}


def build() -> dict[str, Any]:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    other = Ed25519PrivateKey.from_private_bytes(OTHER_SEED)
    x = b64url_encode(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    valid = sign({**BASE, "exp": NOW + 86_400 * 365}, key, KID)
    head, body, sig = valid.split(".")
    none_header = b64url_encode(json.dumps({"alg": "none", "kid": KID}).encode())
    vectors = [
        {"name": "valid", "token": valid, "valid": True, "claims": {**BASE, "exp": NOW + 86_400 * 365}},
        {"name": "valid, never expires", "token": sign(BASE, key, KID), "valid": True, "claims": BASE},
        {
            "name": "expired",
            "token": sign({**BASE, "exp": NOW - 3600}, key, KID),
            "valid": False,
            "code": "expired",
        },
        {
            "name": "signed by another key under the same kid",
            "token": sign(BASE, other, KID),
            "valid": False,
            "code": "bad_signature",
        },
        {
            "name": "unknown kid",
            "token": sign(BASE, key, "lk_unknown"),
            "valid": False,
            "code": "unknown_key",
        },
        {
            "name": "claims changed after signing",
            "token": f"{head}.{b64url_encode(json.dumps({**BASE, 'max_machines': 99}).encode())}.{sig}",
            "valid": False,
            "code": "bad_signature",
        },
        {
            "name": "alg none",
            "token": f"{none_header}.{body}.",
            "valid": False,
            "code": "unsupported_algorithm",
        },
        {"name": "not a JWS", "token": "hello", "valid": False, "code": "malformed"},
    ]
    return {
        "description": "tollkeep licence keys: compact JWS, EdDSA (Ed25519). Check each token at `now` "
        "(unix seconds) with the JWKS; `valid` says the expected outcome, `code` the reason it fails.",
        "now": NOW,
        "leeway_seconds": 60,
        "jwks": {
            "keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": KID, "alg": "EdDSA", "use": "sig"}]
        },
        "private_key_seed_hex": SEED.hex(),
        "vectors": vectors,
    }


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
