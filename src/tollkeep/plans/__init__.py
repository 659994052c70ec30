"""Plans: a customer's plan, its allowance each period, the free → paid carry-over."""

from tollkeep.plans.events import PlanChanged
from tollkeep.plans.service import PlanService, ensure_allowance

__all__ = ["PlanChanged", "PlanService", "ensure_allowance"]
