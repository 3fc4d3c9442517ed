"""Who is calling and what they may do: the identity tables, credentials (API keys, console sessions, CSRF),
the Principal and its cache, roles, the one access declaration per route, and the audit Actor."""
