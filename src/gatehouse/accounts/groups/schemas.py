"""Request and response models for groups, their members and the keys bound to them."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from gatehouse.auth.roles import Role, UserStatus
from gatehouse.fields import Text

MAX_NAME = 100
MAX_DESCRIPTION = 500


def clean_name(value: str) -> str:
    """A group name trimmed, or ValueError saying what is wrong with it (1-100 characters, no control characters)."""
    name = value.strip()
    if not name:
        raise ValueError("a group name must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"a group name has at most {MAX_NAME} characters (this one has {len(name)})")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError("a group name must not contain control characters (tabs, line breaks...)")
    return name


def clean_description(value: str) -> str:
    """A description trimmed, or ValueError (at most 500 characters)."""
    text = value.strip()
    if len(text) > MAX_DESCRIPTION:
        raise ValueError(f"a description has at most {MAX_DESCRIPTION} characters (this one has {len(text)})")
    return text


GroupName = Annotated[Text, AfterValidator(clean_name)]
# clean_name's rule for the document: a visible character, no control characters (the length is checked trimmed).
NAME_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
Description = Annotated[Text, AfterValidator(clean_description)]


class GroupCreate(BaseModel):
    name: GroupName = Field(
        description="1-100 characters, unique whatever their case.", json_schema_extra={"pattern": NAME_PATTERN}
    )
    description: Description = ""


class GroupUpdate(BaseModel):
    """Only the fields sent change."""

    # Not nullable in the document: the validator below refuses null, naming the field (left out: unchanged).
    name: Annotated[
        GroupName | None,
        WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "description": "A new name (renames the group)."}),
    ] = None
    description: Annotated[Description | None, WithJsonSchema({"type": "string", "pattern": r"^[^\u0000]*$"})] = None

    @model_validator(mode="after")
    def _no_nulls(self) -> GroupUpdate:
        for field in ("name", "description"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null: omit it to keep it as it is")
        return self


class GroupRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


class GroupSummary(GroupRead):
    members: int = Field(description="How many users belong to it.")
    keys: int = Field(description="How many keys (not revoked) are bound to it.")


class GroupMemberRead(BaseModel):
    user_id: int
    email: str
    display_name: str
    role: Role
    status: UserStatus
    added_at: datetime


class GroupKeyRead(BaseModel):
    id: int
    prefix: str
    name: str
    user_id: int
    email: str = Field(description="The key owner's email.")
    expires_at: datetime | None = None


class GroupDetail(GroupRead):
    members: list[GroupMemberRead] = Field(description="Its members, by email.")
    keys: list[GroupKeyRead] = Field(description="The keys (not revoked) bound to it, newest first.")


class MembershipRead(BaseModel):
    group_id: int
    user_id: int
    added_at: datetime
    added: bool = Field(description="Whether this request added the user (false: they were a member already).")


class GroupRef(BaseModel):
    """A group one belongs to."""

    id: int
    name: str
    added_at: datetime | None = Field(default=None, description="When the user joined it.")


class GroupDeleted(BaseModel):
    id: int
    name: str
    former_members: list[int] = Field(description="The ids of the users who belonged to it.")
    unbound_revoked_keys: list[int] = Field(description="Revoked keys that were still bound to it, now unbound.")
