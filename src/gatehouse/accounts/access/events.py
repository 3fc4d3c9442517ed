"""The audit events of model access: access rules added and removed (docs/audit.md)."""

from __future__ import annotations

from gatehouse.audit.events import Event


class AccessRuleEvent(Event):
    """What every access-rule event records: whose rule, its effect, what it matches and the pattern."""

    target_type = "access_rule"
    target = "rule_id"
    feed_kind = "access.changed"
    rule_id: int
    user_id: int | None
    group_id: int | None
    effect: str
    target_kind: str
    pattern: str


class AccessRuleAddedEvent(AccessRuleEvent):
    """An access rule was added: a user's or a group's allow or deny of models or upstreams matching `pattern`."""

    action = "access_rule.added"


class AccessRuleRemovedEvent(AccessRuleEvent):
    """An access rule was removed."""

    action = "access_rule.removed"
