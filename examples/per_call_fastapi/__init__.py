"""A seller's FastAPI app charging each call through tollkeep.client."""
