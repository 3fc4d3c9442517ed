"""Request and response models for model access: rules, the policy, and an explained decision."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gatehouse.fields import MAX_DB_INT, Text

PATTERN_HELP = (
    "A model name as clients use it (an alias is one too) or an upstream name, with `*` for any characters and `?` "
    "for one; e.g. `llama3*`, `gpt-4o`, `*`."
)


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int | None = Field(default=None, ge=1, le=MAX_DB_INT, description="The user the rule is for.")
    group_id: int | None = Field(default=None, ge=1, le=MAX_DB_INT, description="Or the group it is for.")
    effect: Literal["allow", "deny"]
    target: Literal["model", "upstream"] = Field(
        default="model", description="What `pattern` matches: the model name asked for, or the serving upstream."
    )
    pattern: Text = Field(min_length=1, max_length=200, description=PATTERN_HELP)

    @model_validator(mode="after")
    def _one_subject(self) -> RuleCreate:
        if (self.user_id is None) == (self.group_id is None):
            raise ValueError("give exactly one of user_id and group_id: the user or the group the rule is for")
        return self


class RuleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int | None
    group_id: int | None
    effect: str
    target: str
    pattern: str
    created_at: datetime
    created_by: int | None


class AccessPolicyRead(BaseModel):
    default: Literal["allow", "deny"] = Field(description="MODEL_ACCESS_DEFAULT: what applies when no rule matches.")
    rules: list[RuleRead]


class RouteDecision(BaseModel):
    upstream: str
    allowed: bool
    decided_by: Literal["key", "user", "group", "default"] = Field(
        description="The key's own model list, one of the user's rules, a group's rule, or the default policy."
    )
    rule_id: int | None = None
    group_id: int | None = None


class AccessCheck(BaseModel):
    user_id: int
    key_id: int | None
    model: str
    group_ids: list[int] = Field(description="The groups whose rules applied (a bound key's group, else the user's).")
    allowed: bool = Field(description="True when at least one upstream serving the model is allowed.")
    routes: list[RouteDecision]
