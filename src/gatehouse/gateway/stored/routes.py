"""Routes: a user's stored responses (OpenAI's Responses API): retrieve, delete, list input items. Thin: parse,
call StoredResponses, shape. Another user's id is answered as an unknown one (404 `response_not_found`); a
front-end's key (acts_for_users) reaches those of the person its header names."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from gatehouse.auth.access import require
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.errors import errors
from gatehouse.fields import Text
from gatehouse.gateway.acting import ViewerDep
from gatehouse.gateway.stored.errors import ResponseNotFound
from gatehouse.gateway.stored.service import Order, StoredResponses, not_found

router = APIRouter(tags=["openai"])
USER = [require(Role.USER)]
StoredDep = Annotated[StoredResponses, provided(StoredResponses)]
ResponseId = Annotated[Text, Path(description="A stored response's id (resp_...).")]
Include = Annotated[
    list[str] | None,
    Query(description="Accepted for compatibility: stored items are returned whole."),
]
MAX_PAGE = 100


class ResponseDeleted(BaseModel):
    """OpenAI's answer to a deleted response."""

    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True


class InputItemList(BaseModel):
    """A page of a response's input items (OpenAI's ResponseItemList)."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


@router.get(
    "/v1/responses/{response_id}", responses=errors(ResponseNotFound), response_model=dict[str, Any], dependencies=USER
)
async def get_response(
    response_id: ResponseId, principal: ViewerDep, stored: StoredDep, include: Include = None
) -> dict[str, Any]:
    """One of the caller's stored responses: the Response object as it was answered."""
    response = await stored.get(principal.user_id, response_id)
    if response is None:
        raise not_found(response_id)
    return response


@router.delete(
    "/v1/responses/{response_id}", responses=errors(ResponseNotFound), response_model=ResponseDeleted, dependencies=USER
)
async def delete_response(response_id: ResponseId, principal: ViewerDep, stored: StoredDep) -> ResponseDeleted:
    """Delete one of the caller's stored responses (a later one that continued from it keeps its own items)."""
    if not await stored.delete(principal.user_id, response_id):
        raise not_found(response_id)
    return ResponseDeleted(id=response_id)


@router.get(
    "/v1/responses/{response_id}/input_items",
    responses=errors(ResponseNotFound),
    response_model=InputItemList,
    dependencies=USER,
)
async def list_input_items(
    response_id: ResponseId,
    principal: ViewerDep,
    stored: StoredDep,
    after: Annotated[Text | None, Query(description="An item id: the page starts after it.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    order: Annotated[Order, Query(description="asc: oldest first; desc: newest first.")] = "desc",
    include: Include = None,
) -> InputItemList:
    """The items the request that created one of the caller's stored responses sent, a page at a time."""
    page = await stored.input_items(principal.user_id, response_id, after=after, limit=limit, order=order)
    if page is None:
        raise not_found(response_id)
    return InputItemList.model_validate(page.as_list())
