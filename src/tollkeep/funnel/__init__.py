"""The sales funnel: acquisition → activation → paid, once per customer."""

from tollkeep.funnel.service import STAGES, FunnelService, conversion

__all__ = ["STAGES", "FunnelService", "conversion"]
