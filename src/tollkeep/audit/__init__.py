"""The audit log: every admin action (API and CLI), who did it, from where, and before/after
for money — written in the same transaction as the change, append-only."""

from tollkeep.audit.queries import entries, entry_view
from tollkeep.audit.repository import record

__all__ = ["entries", "entry_view", "record"]
