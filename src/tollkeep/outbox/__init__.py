"""The outbox: domain events written with the change they report, delivered after the commit to
the sinks registered for their topic (webhooks)."""

from tollkeep.outbox.service import ALL_TOPICS, OutboxMessage, OutboxService, Sink

__all__ = ["ALL_TOPICS", "OutboxMessage", "OutboxService", "Sink"]
