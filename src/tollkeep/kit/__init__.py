"""Shared plumbing: database session scope, errors, money, clock, ids, pagination."""
