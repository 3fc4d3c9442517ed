"""Console pages every signed-in user has: profile, my keys, my usage, the playground."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatehouse.auth.roles import Role
from gatehouse.web.pages import View, page


@page("/console/profile", title="Profile", role=Role.USER, section="You", template="pages/profile.html")
async def profile(view: View) -> Mapping[str, Any]:
    """The viewer's account, their groups, and the password form."""
    return {"me": await view.get("/me")}
