"""Users: accounts, their profile, and their administration (roles, statuses, quotas, blocks)."""
