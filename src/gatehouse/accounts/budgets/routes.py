"""Routes: /admin/{users,groups,keys}/{id}/limits (read, change) and /budgets (their state), and /me/budgets (the
caller's: their day and month, their key's and their groups' budgets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter

from gatehouse.accounts.budgets import service
from gatehouse.accounts.errors import GroupNotFound, KeyNotFound
from gatehouse.auth.access import require
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.roles import Role
from gatehouse.deps import ActorDep, BusDep, PrincipalDep, SessionDep, SettingsDep
from gatehouse.errors import errors
from gatehouse.fields import IdPath
from gatehouse.limits.budget_schemas import BudgetState, LimitsRead, LimitsUpdate

router = APIRouter()
MONITOR = [require(Role.MONITOR)]
ADMIN = [require(Role.ADMIN)]


@router.get("/me/budgets", response_model=list[BudgetState], tags=["me"], dependencies=[require(Role.USER)])
async def my_budgets(principal: PrincipalDep, session: SessionDep, settings: SettingsDep) -> list[BudgetState]:
    """The caller's budgets now: their day (always) and every budget of theirs with a limit (their month, their
    key's day and month, their groups'), each with its usage, what requests in progress hold, and its reset time."""
    subjects = await service.subjects_of_caller(
        session, user_id=principal.user_id, key_id=principal.key_id, group_ids=principal.group_ids
    )
    return await service.budget_states(
        session, subjects, timezone=settings.quota_timezone, currency=settings.price_currency
    )


# What each scope's routes answer when the subject does not exist.
_NOT_FOUND = {"user": UserNotFound, "group": GroupNotFound, "key": KeyNotFound}


def _routes(scope: service.ScopeName) -> None:
    plural = f"{scope}s"
    missing = errors(_NOT_FOUND[scope])

    async def read_limits(subject_id: IdPath, session: SessionDep, settings: SettingsDep) -> LimitsRead:
        row = await service.subject_or_raise(session, scope, subject_id)
        return LimitsRead.of(row, settings.price_currency)

    async def change_limits(
        subject_id: IdPath,
        body: LimitsUpdate,
        principal: PrincipalDep,
        actor: ActorDep,
        bus: BusDep,
        session: SessionDep,
        settings: SettingsDep,
    ) -> LimitsRead:
        row = await service.set_limits(
            session,
            bus=bus,
            actor=actor,
            actor_role=principal.role,
            scope=scope,
            subject_id=subject_id,
            update=body,
        )
        return LimitsRead.of(row, settings.price_currency)

    async def states(subject_id: IdPath, session: SessionDep, settings: SettingsDep) -> list[BudgetState]:
        found = [await service.subject(session, scope, subject_id)]
        return await service.budget_states(
            session, found, timezone=settings.quota_timezone, currency=settings.price_currency
        )

    def doc(function: Callable[..., Awaitable[Any]], text: str) -> Callable[..., Awaitable[Any]]:
        function.__doc__ = text
        function.__name__ = f"{function.__name__}_{scope}"
        return function

    router.get(
        f"/admin/{plural}/{{subject_id}}/limits",
        response_model=LimitsRead,
        tags=["budgets"],
        dependencies=MONITOR,
        responses=missing,
    )(doc(read_limits, f"A {scope}'s quotas and spend limits, per day and per month (null: none)."))
    router.patch(
        f"/admin/{plural}/{{subject_id}}/limits",
        response_model=LimitsRead,
        tags=["budgets"],
        dependencies=ADMIN,
        responses=missing,
    )(
        doc(
            change_limits,
            f"Change a {scope}'s quotas and spend limits (only those sent; null lifts one); audited, and in force on "
            "every replica within a second.",
        )
    )
    router.get(
        f"/admin/{plural}/{{subject_id}}/budgets",
        response_model=list[BudgetState],
        tags=["budgets"],
        dependencies=MONITOR,
        responses=missing,
    )(doc(states, f"A {scope}'s budgets now: usage against each limit, holds of requests in progress, reset times."))


for _scope in ("user", "group", "key"):
    _routes(_scope)
