"""Console pages every signed-in user has: profile, my keys, my usage, the playground."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gatehouse.auth.roles import Role
from gatehouse.web.pages import View, page

# The client surfaces a key may be restricted to (accounts/keys/schemas.py `Surface`), for the form's help text.
SURFACES = ("chat", "responses", "messages", "completions", "ollama_chat", "generate", "embeddings")


@page("/console/profile", title="Profile", role=Role.USER, section="You", template="pages/profile.html")
async def profile(view: View) -> Mapping[str, Any]:
    """The viewer's account, their groups, and the password form."""
    return {"me": await view.get("/me")}


def key_status(key: Mapping[str, Any], now: datetime) -> str:
    """A key's state as a word: revoked, expired or active (from what the API says about it)."""
    if key.get("revoked_at"):
        return "revoked"
    expires = key.get("expires_at")
    if expires and datetime.fromisoformat(str(expires).replace("Z", "+00:00")) <= now:
        return "expired"
    return "active"


@page("/console/keys", title="My keys", role=Role.USER, section="You", template="pages/keys.html")
async def my_keys(view: View) -> Mapping[str, Any]:
    """The viewer's API keys (prefixes only), the form to make one, and per key: narrow its limits, revoke it."""
    me = await view.get("/me")
    keys = await view.get("/me/keys")
    now = datetime.now(UTC)
    groups = {g["id"]: g["name"] for g in me.get("groups", [])}
    rows = [{**k, "status": key_status(k, now), "group": groups.get(k.get("group_id"))} for k in keys]
    return {"me": me, "keys": rows, "groups": me.get("groups", []), "surfaces": SURFACES}


def budget_title(budget: Mapping[str, Any]) -> str:
    """How a budget is named on the page: whose, and which period."""
    period = "this month" if budget["period"] == "month" else "today"
    whose = {"user": "You", "group": f"Group {budget['name']}", "key": f"Key {budget['name']}"}[budget["scope"]]
    return f"{whose}, {period}"


@page("/console/usage", title="My usage", role=Role.USER, section="You", template="pages/usage.html")
async def my_usage(view: View) -> Mapping[str, Any]:
    """Today against the viewer's quotas, every budget of theirs this period, and the last 30 days per day."""
    today = await view.get("/me/usage")
    budgets = await view.optional("/me/budgets", default=[])
    history = await view.get("/me/usage/history", {"days": 30})
    # Today's own budget is the quotas shown first; its spend limit (if any) is shown with them.
    mine_today = next((b for b in budgets if b["scope"] == "user" and b["period"] == "day"), None)
    others = [{**b, "title": budget_title(b)} for b in budgets if b is not mine_today]
    days = history["days"]
    return {
        "today": today,
        "today_spend": mine_today["spend"] if mine_today else None,
        "budgets": others,
        "history": history,
        "messages_points": [(d["day"], d["messages"]) for d in days],
        "tokens_points": [(d["day"], d["tokens"]) for d in days],
        "spend_points": [(d["day"], d["spend_nanos"] / 1e9) for d in days],
    }


@page("/console/playground", title="Playground", role=Role.USER, section="You", template="pages/playground.html")
async def playground(view: View) -> Mapping[str, Any]:
    """Chat with any model the viewer may use (the models /v1/models lists for them); the page's script streams
    the answer from /v1/chat/completions with the viewer's session."""
    listed = await view.get("/v1/models")
    return {"models": sorted(m["id"] for m in listed.get("data", []))}
