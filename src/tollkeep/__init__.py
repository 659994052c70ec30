"""tollkeep: a self-hosted monetization layer for AI agents, tools and APIs."""

__version__ = "0.1.0"
__all__ = ["__version__"]
