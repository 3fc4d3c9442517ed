"""Accounts: users, API keys, console sessions and invites, each a package with its models or schemas, service and
routes; the bootstrap superadmin."""
