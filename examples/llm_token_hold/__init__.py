"""An LLM-style endpoint billing tokens with a hold."""
