"""Pricing: pure rating of usage against the catalog (see ``rating.py``)."""

from tollkeep.pricing.rating import ROUNDING, Rating, cumulative_price, needs_aggregate, rate, round_amount

__all__ = ["ROUNDING", "Rating", "cumulative_price", "needs_aggregate", "rate", "round_amount"]
