"""Routes: /admin/access (the policy and every rule), /admin/access/rules (add, remove) and /admin/access/check
(why a user may or may not use a model)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from gatehouse.accounts.access import service
from gatehouse.accounts.access.errors import InvalidRule, RuleNotFound
from gatehouse.accounts.access.policy import AccessPolicy
from gatehouse.accounts.access.schemas import AccessCheck, AccessPolicyRead, RuleCreate, RuleRead
from gatehouse.accounts.errors import GroupNotFound, KeyNotFound
from gatehouse.auth.access import require
from gatehouse.auth.errors import UserNotFound
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.deps import ActorDep, BusDep, SessionDep
from gatehouse.errors import ErrorBody, errors
from gatehouse.fields import MAX_DB_INT, IdPath
from gatehouse.settings import Settings
from gatehouse.upstreams.registry import UpstreamRegistry

router = APIRouter()
MONITOR = [require(Role.MONITOR)]
ADMIN = [require(Role.ADMIN)]
PolicyDep = Annotated[AccessPolicy, provided(AccessPolicy)]
SettingsDep = Annotated[Settings, provided(Settings)]
UpstreamsDep = Annotated[UpstreamRegistry, provided(UpstreamRegistry)]
OptionalId = Annotated[int | None, Query(ge=1, le=MAX_DB_INT)]


@router.get("/admin/access", response_model=AccessPolicyRead, tags=["admin"], dependencies=MONITOR)
async def access_policy(
    session: SessionDep, settings: SettingsDep, user_id: OptionalId = None, group_id: OptionalId = None
) -> AccessPolicyRead:
    """The default policy (MODEL_ACCESS_DEFAULT) and the access rules (of one user or group, when given)."""
    rules = await service.list_rules(session, user_id=user_id, group_id=group_id)
    return AccessPolicyRead(
        default=settings.model_access_default, rules=[RuleRead.model_validate(rule) for rule in rules]
    )


@router.post(
    "/admin/access/rules",
    response_model=RuleRead,
    status_code=status.HTTP_201_CREATED,
    tags=["admin"],
    dependencies=ADMIN,
    responses=errors(InvalidRule, UserNotFound, GroupNotFound)
    | {
        200: {"model": RuleRead, "description": "The same rule exists already: it is returned unchanged."},
        409: {
            "model": ErrorBody,
            "description": "`invalid_rule`: a rule for the same pattern with the other effect exists; remove it first.",
        },
    },
)
async def add_rule(body: RuleCreate, response: Response, session: SessionDep, actor: ActorDep, bus: BusDep) -> RuleRead:
    """Allow or deny a user or a group models (by the name clients ask for) or upstreams, by `*` pattern; in force
    on every replica within a second."""
    rule, added = await service.add_rule(session, bus=bus, actor=actor, rule=body)
    if not added:
        response.status_code = status.HTTP_200_OK
    return RuleRead.model_validate(rule)


@router.delete(
    "/admin/access/rules/{rule_id}",
    responses=errors(RuleNotFound),
    response_model=RuleRead,
    tags=["admin"],
    dependencies=ADMIN,
)
async def remove_rule(rule_id: IdPath, session: SessionDep, actor: ActorDep, bus: BusDep) -> RuleRead:
    """Remove an access rule; out of force on every replica within a second."""
    return RuleRead.model_validate(await service.remove_rule(session, bus=bus, actor=actor, rule_id=rule_id))


@router.get(
    "/admin/access/check",
    responses=errors(UserNotFound, KeyNotFound),
    response_model=AccessCheck,
    tags=["admin"],
    dependencies=MONITOR,
)
async def check_access(
    session: SessionDep,
    policy: PolicyDep,
    upstreams: UpstreamsDep,
    user_id: Annotated[int, Query(ge=1, le=MAX_DB_INT)],
    model: Annotated[str, Query(min_length=1, max_length=200)],
    key_id: OptionalId = None,
) -> AccessCheck:
    """Whether a user (through one of their keys, when `key_id` is given) may use `model`, per upstream serving
    it, and which rule (or the default policy) decided."""
    names = list(dict.fromkeys(route.upstream.name for route in upstreams.all_routes(model)))
    return await service.check(session, policy=policy, upstreams=names, user_id=user_id, model=model, key_id=key_id)
