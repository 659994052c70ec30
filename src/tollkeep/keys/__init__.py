"""API keys: issuing, rotating and revoking them, and authenticating a caller by one."""

from tollkeep.keys.events import KeyCreated, KeyRevoked
from tollkeep.keys.service import ALL_SCOPES, KeyService, Principal

__all__ = ["ALL_SCOPES", "KeyCreated", "KeyRevoked", "KeyService", "Principal"]
