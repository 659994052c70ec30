"""Operators: the seller's own credentials — admin tokens with a role (admin, read-only) and
server keys (``tk_sk_…``) with which a seller's backend meters any customer."""

from tollkeep.operators.domain import (
    ADMIN_PREFIX,
    ENV_ADMIN,
    SERVER_PREFIX,
    SERVER_SCOPES,
    Actor,
    OperatorKind,
    Role,
)
from tollkeep.operators.service import OperatorService, operator_view

__all__ = [
    "ADMIN_PREFIX",
    "ENV_ADMIN",
    "SERVER_PREFIX",
    "SERVER_SCOPES",
    "Actor",
    "OperatorKind",
    "OperatorService",
    "Role",
    "operator_view",
]
