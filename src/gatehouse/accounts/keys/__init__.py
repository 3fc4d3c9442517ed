"""API keys: shown once, stored hashed, revoked at once on every replica."""
