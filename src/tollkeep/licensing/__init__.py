"""Licence keys: Ed25519-signed JWTs that verify offline, machine activations, revocation.

``verify.py`` is the part an app vendors (no tollkeep imports); the rest is the server side."""

from tollkeep.licensing.events import LicenseCreated, LicenseRecoveryRequested, LicenseRevoked, LicenseUpdated
from tollkeep.licensing.service import LicenseService
from tollkeep.licensing.verify import License, LicenseInvalid, keys_from_jwks, verify

__all__ = [
    "License",
    "LicenseCreated",
    "LicenseInvalid",
    "LicenseRecoveryRequested",
    "LicenseRevoked",
    "LicenseService",
    "LicenseUpdated",
    "keys_from_jwks",
    "verify",
]
