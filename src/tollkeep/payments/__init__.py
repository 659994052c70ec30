"""Payments: provider adapters, the durable webhook inbox, checkout, the sales funnel."""

__all__: list[str] = []
