"""What the demo seeds: people of every role, groups, access rules, limits, invites, keys and a price for the
demo models. Everything it makes is recognisable, so that `gatehouse demo reset` removes exactly that: people and
invites by their `@demo.example` address, groups by their `demo-` name and description, prices by their source."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gatehouse.auth.roles import Role

DOMAIN = "demo.example"  # reserved by RFC 2606 style: no one's real address
GROUP_PREFIX = "demo-"
GROUP_MARK = "Demo data (gatehouse demo): removed by `gatehouse demo reset`."
PRICE_SOURCE = "demo"  # model_price.source of the prices the demo sets


@dataclass(frozen=True)
class Person:
    name: str
    display_name: str
    role: Role

    @property
    def email(self) -> str:
        return f"{self.name}@{DOMAIN}"


PEOPLE = (
    Person("sam", "Sam (superadmin)", Role.SUPERADMIN),
    Person("alice", "Alice (admin)", Role.ADMIN),
    Person("mo", "Mo (monitor)", Role.MONITOR),
    Person("carol", "Carol", Role.USER),
    Person("dave", "Dave", Role.USER),
    Person("erin", "Erin", Role.USER),
)
# group -> (description, members, limits as PATCH .../limits takes them)
GROUPS: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
    "demo-research": (("alice", "carol", "dave"), {"tokens_per_day": 200_000, "spend_per_month": "5"}),
    "demo-support": (("mo", "erin"), {"messages_per_day": 300}),
}
# (whose: "user:<name>" or "group:<name>", effect, pattern): support may not embed, except Mo.
RULES = (
    ("group:demo-support", "deny", "demo-embed"),
    ("user:mo", "allow", "demo-embed"),
)
USER_LIMITS: dict[str, dict[str, object]] = {"carol": {"messages_per_month": 1_000}}
INVITES = (("newcomer", Role.USER), ("intern", Role.USER))
PROJECT_KEY = ("dave", "demo-research", "research notebook")  # a key bound to a group: a project key
# Per million tokens, in PRICE_CURRENCY; set only where the model has no price in force.
PRICES = {"demo": (Decimal("0.50"), Decimal("1.50")), "demo-embed": (Decimal("0.02"), Decimal("0"))}


def group_name_is_demo(name: str, description: str) -> bool:
    """Whether a group is the demo's (its name and its description both say so)."""
    return name.startswith(GROUP_PREFIX) and description == GROUP_MARK
