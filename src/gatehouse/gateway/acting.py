"""Whom a gateway request is served as: the caller, or, for a front-end's key (acts_for_users), the person the
request names (accounts/acting). A key that does not act for users but names someone is refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request

from gatehouse.accounts.acting.service import Acting
from gatehouse.auth.access import resolve_principal
from gatehouse.auth.actor import actor_for
from gatehouse.auth.principal import Principal
from gatehouse.core.components import components_of
from gatehouse.core.logging import bind_context


async def served_as(
    request: Request, principal: Principal, body: Mapping[str, Any] | None, surface: str | None
) -> Principal:
    """The principal to serve this request as (`body` None: a route without one, where only a header names)."""
    acting = components_of(request).get(Acting)
    if principal.acts_for_users:
        person = await acting.principal_for(
            principal, request.headers, body, surface, actor=lambda: actor_for(request, principal)
        )
        if person is not principal:
            # The access log and every log line of the request name the person, and the key's owner beside them.
            request.scope["state"]["user_id"] = person.user_id
            bind_context(user_id=person.user_id, key_owner_id=principal.user_id)
        return person
    header = acting.naming.refused_header(request.headers)
    if header is not None:
        await acting.refuse(principal, header, request.headers[header], actor=actor_for(request, principal))
    return principal


async def viewer(request: Request) -> Principal:
    """The caller of a gateway route without a body (model lists, stored responses): a front-end's key sees what the
    person its header names may see, or what its owner may when it names nobody."""
    return await served_as(request, await resolve_principal(request), None, None)


ViewerDep = Annotated[Principal, Depends(viewer)]


def requested(request: Request, principal: Principal) -> bool:
    """Whether `served_as` has work to do: a front-end's key, or another caller naming a person (refused). For every
    other request it costs an attribute and a header lookup."""
    if principal.acts_for_users:
        return True
    return components_of(request).get(Acting).naming.refused_header(request.headers) is not None
