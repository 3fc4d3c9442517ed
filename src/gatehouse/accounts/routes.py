"""The accounts router: users and their profile, API keys, console sessions, invites and sign-up."""

from __future__ import annotations

from fastapi import APIRouter

from gatehouse.accounts.access.routes import router as access
from gatehouse.accounts.budgets.routes import router as budgets
from gatehouse.accounts.groups.routes import router as groups
from gatehouse.accounts.invites.routes import router as invites
from gatehouse.accounts.keys.routes import router as keys
from gatehouse.accounts.sessions.routes import me as password
from gatehouse.accounts.sessions.routes import router as sessions
from gatehouse.accounts.users.routes import router as users

router = APIRouter()
for part in (sessions, users, password, keys, invites, access, groups, budgets):
    router.include_router(part)
