"""Console pages of the Govern section: users, invites, everyone's keys, groups and model access, prices, rate limits.

Each page reads through the API as the viewer (see web/pages.py); each change is the browser calling the API. A
control is shown only to the roles the API allows it (a monitor may find, block and unblock users, nothing else).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from gatehouse.accounts.invites.service import InviteStatus
from gatehouse.accounts.keys.service import KeyState
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.exports.entities import ENTITY_NAMES
from gatehouse.web.pages import View, page

ROLES = [r.value for r in Role]
STATUSES = [s.value for s in UserStatus]
LIMITS = ("messages_per_day", "tokens_per_day", "spend_per_day", "messages_per_month", "tokens_per_month")
LIMIT_FIELDS = (*LIMITS, "spend_per_month")


def _choices(view: View) -> dict[str, Any]:
    """What every Govern form offers, and what the viewer may do."""
    return {
        "roles": ROLES,
        "statuses": STATUSES,
        "limit_fields": LIMIT_FIELDS,
        "is_admin": view.can(Role.ADMIN),
        "is_superadmin": view.can(Role.SUPERADMIN),
    }


@page(
    "/console/users", title="Users", role=Role.MONITOR, section="Govern", template="pages/users.html", live=("user.",)
)
async def users(view: View) -> Mapping[str, Any]:
    """Users, searched and filtered, with today's usage against their quotas; block and unblock on each row."""
    filters = view.query("q", "role", "status")
    found = await view.get("/admin/users", {**filters, **view.query("before"), "limit": 50})
    return {"users": found, "filters": filters, **_choices(view)}


@page(
    "/console/users/{user_id}",
    title="User",
    role=Role.MONITOR,
    section="Govern",
    template="pages/user.html",
    nav=False,
    live=("user.",),
)
async def user(view: View) -> Mapping[str, Any]:
    """One user: usage, budgets and limits, groups, keys; and what the viewer may change about them."""
    user_id = view.id("user_id")
    found = await view.get(f"/admin/users/{user_id}")
    keys = await view.optional("/admin/keys", {"user_id": user_id}) if view.can(Role.ADMIN) else None
    return {
        "user": found,
        "limits": await view.optional(f"/admin/users/{user_id}/limits"),
        "budgets": await view.optional(f"/admin/users/{user_id}/budgets", default=[]),
        "groups": await view.optional(f"/admin/users/{user_id}/groups", default=[]),
        "keys": keys,
        "entities": ENTITY_NAMES,
        **_choices(view),
    }


@page("/console/invites", title="Invites", role=Role.ADMIN, section="Govern", template="pages/invites.html")
async def invites(view: View) -> Mapping[str, Any]:
    """Invites with their status; create one (its link shown once), revoke one."""
    found = await view.get("/admin/invites", {**view.query("status", "before"), "limit": 50})
    return {
        "invites": found,
        "filters": view.query("status"),
        "invite_statuses": [s.value for s in InviteStatus],
        **_choices(view),
    }


@page("/console/all-keys", title="Keys", role=Role.ADMIN, section="Govern", template="pages/all-keys.html")
async def all_keys(view: View) -> Mapping[str, Any]:
    """Everyone's keys (prefixes only), filtered; revoke one, change its limits."""
    filters = view.query("user_id", "group_id", "state")
    found = await view.get("/admin/keys", {**filters, **view.query("before"), "limit": 100})
    return {"keys": found, "filters": filters, "key_states": list(get_args(KeyState)), **_choices(view)}


@page(
    "/console/groups",
    title="Groups",
    role=Role.MONITOR,
    section="Govern",
    template="pages/groups.html",
    live=("group.",),
)
async def groups(view: View) -> Mapping[str, Any]:
    """Groups with their member and key counts; create one."""
    filters = view.query("q")
    return {"groups": await view.get("/admin/groups", filters), "filters": filters, **_choices(view)}


@page(
    "/console/groups/{group_id}",
    title="Group",
    role=Role.MONITOR,
    section="Govern",
    template="pages/group.html",
    nav=False,
    live=("group.",),
)
async def group(view: View) -> Mapping[str, Any]:
    """One group: members (add, remove), bound keys, limits and budgets, its access rules; rename or delete it."""
    group_id = view.id("group_id")
    found = await view.get(f"/admin/groups/{group_id}")
    policy = await view.optional("/admin/access", {"group_id": group_id}, default={"default": "?", "rules": []})
    return {
        "group": found,
        "limits": await view.optional(f"/admin/groups/{group_id}/limits"),
        "budgets": await view.optional(f"/admin/groups/{group_id}/budgets", default=[]),
        "rules": [r for r in policy["rules"] if r["group_id"] == group_id],
        **_choices(view),
    }


@page("/console/access", title="Model access", role=Role.MONITOR, section="Govern", template="pages/access.html")
async def access(view: View) -> Mapping[str, Any]:
    """The model access policy: its default, every rule (add, remove), and the check tool."""
    filters = view.query("user_id", "group_id")
    policy = await view.get("/admin/access", filters)
    group_list = await view.optional("/admin/groups", default=[])
    return {
        "policy": policy,
        "filters": filters,
        "group_names": {g["id"]: g["name"] for g in group_list},
        "group_list": group_list,
        **_choices(view),
    }


@page("/console/prices", title="Prices", role=Role.MONITOR, section="Govern", template="pages/prices.html")
async def prices(view: View) -> Mapping[str, Any]:
    """Prices in force and scheduled (set, remove), and their history."""
    history = await view.optional(
        "/admin/prices/history", {**view.query("model", "before"), "limit": 50}, default={"items": []}
    )
    return {"prices": await view.get("/admin/prices"), "history": history, **_choices(view)}


@page("/console/rate-limits", title="Rate limits", role=Role.ADMIN, section="Govern", template="pages/rate-limits.html")
async def rate_limits(view: View) -> Mapping[str, Any]:
    """Every rate limit with the value in force; change one, or return it to its default."""
    return {"rules": await view.get("/admin/rate-limits"), **_choices(view)}
