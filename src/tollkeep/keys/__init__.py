"""API keys: issuing, rotating and revoking them, and authenticating a caller by one."""

from tollkeep.keys.events import KeyCreated, KeyRevoked
from tollkeep.keys.service import ALL_SCOPES, LIMIT_FIELDS, KeyService, Principal, check_limits

__all__ = [
    "ALL_SCOPES",
    "LIMIT_FIELDS",
    "KeyCreated",
    "KeyRevoked",
    "KeyService",
    "Principal",
    "check_limits",
]
