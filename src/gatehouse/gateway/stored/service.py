"""Stored responses: saved in one INSERT on the request path, read back per user.

A response belongs to the user whose request created it; any other caller is told it does not exist (404, never
403), so that an id leaks nothing. The session-level functions serve transactions of other domains (a deletion
request); `StoredResponses` is the gateway's handle (on `Gateway.stored_responses`, and provided to the routes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Table, bindparam, delete, insert, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import BindParameter

from gatehouse.db.base import utcnow
from gatehouse.db.statements import StatementStore
from gatehouse.gateway.stored.errors import ResponseNotFound
from gatehouse.gateway.stored.models import StoredResponse

MAX_ANCESTORS = 100  # a conversation goes back this many responses at most (its newest part is kept)
Order = Literal["asc", "desc"]
JSON = dict[str, Any]

_table: Table = StoredResponse.__table__  # type: ignore[assignment]
# Built once, with typed bind parameters (a statement object reused keeps its compiled form: db/statements.py).
_p: dict[str, BindParameter[Any]] = {c.name: bindparam("p_" + c.name, type_=c.type) for c in _table.columns}
_INSERT = insert(_table).values({name: bind for name, bind in _p.items()})


@dataclass(frozen=True)
class ItemsPage:
    """A page of a response's input items, in OpenAI's list shape (`as_list`)."""

    data: list[JSON]
    has_more: bool

    def as_list(self) -> JSON:
        return {
            "object": "list",
            "data": self.data,
            "first_id": self.data[0].get("id") if self.data else None,
            "last_id": self.data[-1].get("id") if self.data else None,
            "has_more": self.has_more,
        }


def _theirs(user_id: int, response_id: str) -> ColumnElement[bool]:
    return (StoredResponse.id == response_id) & (StoredResponse.user_id == user_id)


def not_found(response_id: str, *, param: str | None = None) -> ResponseNotFound:
    return ResponseNotFound(
        f"No stored response `{response_id}`: it was never stored (store: false), was deleted or has expired. "
        "Send the whole conversation as `input` instead, or use the id of one of your own stored responses.",
        param=param,
    )


async def get(session: AsyncSession, *, user_id: int, response_id: str) -> JSON | None:
    """The Response object as the client got it; None when absent or another user's."""
    found = await session.execute(select(StoredResponse.response).where(_theirs(user_id, response_id)))
    value: JSON | None = found.scalar_one_or_none()
    return value


async def conversation(session: AsyncSession, *, user_id: int, response_id: str) -> list[JSON]:
    """What a request with `previous_response_id=response_id` continues from: for each response of its chain, from
    the oldest ancestor to this one, its input items then its output items. The chain goes back MAX_ANCESTORS
    responses at most, and stops where an ancestor was deleted or has expired. ResponseNotFound (on
    `previous_response_id`) when the id is not one of this user's stored responses."""
    parent = aliased(StoredResponse)
    chain = (
        select(StoredResponse.id, StoredResponse.previous_response_id, literal_column("0").label("depth"))
        .where(_theirs(user_id, response_id))
        .cte("chain", recursive=True)
    )
    chain = chain.union_all(
        select(parent.id, parent.previous_response_id, chain.c.depth + 1).where(
            parent.id == chain.c.previous_response_id, parent.user_id == user_id, chain.c.depth < MAX_ANCESTORS
        )
    )
    query = (
        select(StoredResponse.input_items, StoredResponse.response)
        .join(chain, StoredResponse.id == chain.c.id)
        .order_by(chain.c.depth.desc())
    )
    rows = (await session.execute(query)).all()
    if not rows:
        raise not_found(response_id, param="previous_response_id")
    items: list[JSON] = []
    for input_items, response in rows:
        items.extend(input_items)
        items.extend(response.get("output") or [])
    return items


async def input_items(
    session: AsyncSession,
    *,
    user_id: int,
    response_id: str,
    after: str | None = None,
    limit: int = 20,
    order: Order = "desc",
) -> ItemsPage | None:
    """A page of the items the request that created the response sent (`desc`: the last one first), after the
    item `after` in that order; None when the response is absent or another user's. An `after` that is not one of
    its items gives an empty page."""
    found = await session.execute(select(StoredResponse.input_items).where(_theirs(user_id, response_id)))
    stored: list[JSON] | None = found.scalar_one_or_none()
    if stored is None:
        return None
    items = stored if order == "asc" else stored[::-1]
    if after is not None:
        position = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        items = items[position + 1 :] if position is not None else []
    return ItemsPage(data=items[:limit], has_more=len(items) > limit)


async def delete_one(session: AsyncSession, *, user_id: int, response_id: str) -> bool:
    """Delete one of the user's stored responses; False when absent or another user's. A later response that
    continued from it keeps its own items: its conversation now starts after the gap."""
    result = await session.execute(delete(StoredResponse).where(_theirs(user_id, response_id)))
    return bool(getattr(result, "rowcount", 0))


async def delete_of_user(session: AsyncSession, *, user_id: int) -> int:
    """Delete every stored response of a user (a deletion request), in the caller's transaction; how many."""
    result = await session.execute(delete(StoredResponse).where(StoredResponse.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


class StoredResponses:
    """The gateway's stored responses: the INSERT through the statement store (one statement, as on the quota's
    path: no transaction held across loop turns on SQLite, one prepared round trip on PostgreSQL), reads through
    read-only sessions, deletes through ordinary transactions."""

    def __init__(
        self,
        statements: StatementStore,
        sessionmaker: async_sessionmaker[AsyncSession],
        read_sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        self._statements = statements
        self._sessionmaker = sessionmaker
        self._read = read_sessionmaker

    async def save(
        self,
        user_id: int,
        key_id: int | None,
        response: JSON,
        input_items: list[JSON],
        previous_response_id: str | None,
    ) -> None:
        """Store a response (its `id` and `model` are read from it) with the input items its request sent."""
        await self._statements.scalar(
            _INSERT,
            {
                "p_id": response["id"],
                "p_user_id": user_id,
                "p_key_id": key_id,
                "p_model": response.get("model") or "",
                "p_previous_response_id": previous_response_id,
                "p_created_at": utcnow(),
                "p_input_items": input_items,
                "p_response": response,
            },
        )

    async def get(self, user_id: int, response_id: str) -> JSON | None:
        """The stored Response object; None when absent or another user's (callers answer 404, never 403)."""
        async with self._read() as session:
            return await get(session, user_id=user_id, response_id=response_id)

    async def conversation(self, user_id: int, response_id: str) -> list[JSON]:
        """The items a request with `previous_response_id=response_id` continues from (see `conversation`);
        ResponseNotFound (404 `response_not_found`, on `previous_response_id`) when it is not this user's."""
        async with self._read() as session:
            return await conversation(session, user_id=user_id, response_id=response_id)

    async def delete(self, user_id: int, response_id: str) -> bool:
        """Delete one of the user's stored responses; False when absent or another user's."""
        async with self._sessionmaker() as session, session.begin():
            return await delete_one(session, user_id=user_id, response_id=response_id)

    async def input_items(
        self, user_id: int, response_id: str, *, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> ItemsPage | None:
        """A page of the response's input items (see `input_items`); None when absent or another user's."""
        async with self._read() as session:
            return await input_items(
                session, user_id=user_id, response_id=response_id, after=after, limit=limit, order=order
            )
