"""Exports with PII masked by default, and deletion requests (erase or anonymise a user)."""
