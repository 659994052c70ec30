"""Runnable examples of tollkeep.client (each one runs in `make test`: tests/examples)."""
