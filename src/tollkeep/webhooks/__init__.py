"""Outbound webhooks: the seller's endpoints, and every outbox event delivered to them signed
per the Standard Webhooks spec, retried, logged, behind an SSRF guard."""

from tollkeep.webhooks.domain import TEST_TOPIC
from tollkeep.webhooks.events import WebhookEndpointDisabled
from tollkeep.webhooks.service import WebhookService

__all__ = ["TEST_TOPIC", "WebhookEndpointDisabled", "WebhookService"]
