"""The audit events of demo data (docs/audit.md): seeded, and reset (what was removed, then seeded again)."""

from __future__ import annotations

from gatehouse.audit.events import Event


class DemoSeededEvent(Event):
    """`gatehouse demo seed` (or reset) made the demo people, groups, keys, invites, rules, limits and traffic."""

    action = "demo.seeded"
    users: int
    groups: int
    keys: int
    invites: int
    access_rules: int
    prices: list[str]
    requests: int
    forced: bool


class DemoResetEvent(Event):
    """`gatehouse demo reset` removed the demo data (each person's removal is its own `user.deleted`)."""

    action = "demo.reset"
    users: int
    groups: int
    invites: int
    access_rules: int
    prices: int
    budget_alerts: int
