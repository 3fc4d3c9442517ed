"""Daily quotas: reserve before calling the upstream, settle to the actual usage afterwards.

Both are single atomic UPDATE statements against `usage_counter`, checked against the user's limits
*inside* the statement (a correlated subquery), so they are exact on any number of replicas and see a
changed limit at once. A request is admitted only if it fits what remains:

- messages: `messages + 1 <= messages_per_day`;
- tokens: `tokens + reserved_tokens + need <= tokens_per_day`, where `need` is an upper bound of the
  prompt plus one completion token. The reservation grants `min(want, what remains)`; the completion
  cap sent upstream (`max_tokens` / `num_predict`) is the grant minus the prompt bound, so the upstream
  cannot produce more than was reserved.

The prompt bound counts UTF-8 bytes (a byte-level BPE token covers at least one byte) plus framing per
message, plus IMAGE_TOKEN_ALLOWANCE per image: it is never below the real prompt for text. Settlement
records what the upstream reported; when it reported nothing, an estimate (see `estimate_usage`) capped at
the grant, so the recorded total still never passes the quota.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, and_, bindparam, case, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.auth.models import User
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import QUOTA_BLOCKS
from gatehouse.db.statements import StatementStore
from gatehouse.limits.errors import QuotaExceeded
from gatehouse.limits.models import UsageCounter

log = get_logger("gatehouse.quotas")
MESSAGE_FRAMING_TOKENS = 8  # role markers and separators a chat template adds per message
REQUEST_FRAMING_TOKENS = 16  # the template's fixed start and the assistant's turn marker

_uc: Table = UsageCounter.__table__  # type: ignore[assignment]
_users: Table = User.__table__  # type: ignore[assignment]
_message_limit = select(_users.c.messages_per_day).where(_users.c.id == _uc.c.user_id).scalar_subquery()
_token_limit = select(_users.c.tokens_per_day).where(_users.c.id == _uc.c.user_id).scalar_subquery()


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one admitted request holds until it settles."""

    user_id: int
    day: date
    messages: int
    grant: int  # tokens reserved; 0 when the user has no token quota
    prompt_bound: int

    @property
    def completion_cap(self) -> int | None:
        """The most completion tokens the upstream may produce (None: no token quota)."""
        return self.grant - self.prompt_bound if self.grant else None


def quota_day(timezone: str, now: datetime | None = None) -> date:
    """Today in QUOTA_TIMEZONE."""
    return (now or datetime.now(UTC)).astimezone(ZoneInfo(timezone)).date()


def resets_at(timezone: str, day: date) -> datetime:
    """When `day` ends in QUOTA_TIMEZONE, in UTC."""
    zone = ZoneInfo(timezone)
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


# --- bounds and estimates ---------------------------------------------------------------------------


def _text_bytes(content: Any) -> tuple[int, int]:
    """(UTF-8 bytes of the text, number of images) in a message content (string or parts)."""
    if isinstance(content, str):
        return len(content.encode()), 0
    if isinstance(content, list):
        total, images = 0, 0
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "image_url":
                    images += 1
                total += len(str(part.get("text") or "").encode())
        return total, images
    return (len(str(content).encode()) if content is not None else 0), 0


def prompt_bound(messages: list[dict[str, Any]], *, extra: Any = None, image_allowance: int) -> int:
    """An upper bound of the prompt's tokens: bytes, framing, and an allowance per image."""
    total = REQUEST_FRAMING_TOKENS
    for message in messages:
        size, images = _text_bytes(message.get("content"))
        total += size + MESSAGE_FRAMING_TOKENS + (images + len(message.get("images") or ())) * image_allowance
        if message.get("tool_calls"):
            total += len(str(message["tool_calls"]).encode())
    if extra:
        total += len(str(extra).encode())
    return total


def embedding_bound(value: Any) -> int:
    """An upper bound of the tokens in an embeddings input (text, texts or token arrays)."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else [value]
    total = 0
    for item in items:
        if isinstance(item, str):
            total += len(item.encode()) + 2
        elif isinstance(item, list):
            total += len(item) + 2
        else:
            total += 3
    return total


# --- reserve and settle -----------------------------------------------------------------------------


# The statements are built once, with bind parameters: building a SQLAlchemy expression costs more than
# executing it, and a statement object reused keeps its compiled form in SQLAlchemy's cache.
# (Names prefixed: SQLAlchemy reserves column names for the SET clause's own parameters.)
_PARAMS = ("user_id", "day", "messages", "need", "want", "now", "tokens", "grant")
_p: dict[str, Any] = {name: bindparam("p_" + name) for name in _PARAMS}
_available = _token_limit - _uc.c.tokens - _uc.c.reserved_tokens
_grant = case((_token_limit.is_(None), 0), (_available < _p["want"], _available), else_=_p["want"])
_RESERVE = (
    update(_uc)
    .where(_uc.c.user_id == _p["user_id"], _uc.c.day == _p["day"])
    .where(or_(_message_limit.is_(None), _uc.c.messages + _p["messages"] <= _message_limit))
    .where(or_(_token_limit.is_(None), _available >= _p["need"]))
    .values(
        messages=_uc.c.messages + _p["messages"],
        reserved_tokens=_uc.c.reserved_tokens + _grant,
        last_grant=_grant,
        updated_at=_p["now"],
    )
    .returning(_uc.c.last_grant)
)
_released = _uc.c.reserved_tokens - _p["grant"]
_settle_values: dict[str, Any] = {
    "tokens": _uc.c.tokens + _p["tokens"],
    # Never below zero: a counter reset (`gatehouse usage reset`) may have dropped the reservation.
    "reserved_tokens": case((_released < 0, 0), else_=_released),
    "updated_at": _p["now"],
}
_SETTLE = update(_uc).where(_uc.c.user_id == _p["user_id"], _uc.c.day == _p["day"]).values(**_settle_values)
_SETTLE_REFUND = _SETTLE.values(
    messages=case((_uc.c.messages >= _p["messages"], _uc.c.messages - _p["messages"]), else_=0)
)
_INSERT = {
    dialect: builder(_uc)
    .values(
        user_id=_p["user_id"],
        day=_p["day"],
        messages=0,
        tokens=0,
        reserved_tokens=0,
        last_grant=0,
        updated_at=_p["now"],
    )
    .on_conflict_do_nothing(index_elements=["user_id", "day"])
    for dialect, builder in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def _bind(**values: Any) -> dict[str, Any]:
    return {"p_" + name: value for name, value in values.items()}


async def reserve(
    store: StatementStore, *, user_id: int, day: date, messages: int, prompt: int, want_completion: int, timezone: str
) -> Reservation:
    """Admit a request if it fits today's quotas, holding its tokens; else raise QuotaExceeded (429)."""
    need = prompt + (1 if messages else 0)
    params = _bind(
        user_id=user_id, day=day, messages=messages, need=need, want=prompt + want_completion, now=datetime.now(UTC)
    )
    # The store runs each statement in autocommit (db/statements.py): each is atomic on its own.
    grant = await store.scalar(_RESERVE, params)
    if grant is None:
        # No row yet today (the first request of the day), or over quota: create the row, try once more.
        await store.scalar(_INSERT[store.dialect_name], params)
        grant = await store.scalar(_RESERVE, params)
    if grant is None:
        raise await _refusal(store.engine, user_id=user_id, day=day, messages=messages, need=need, timezone=timezone)
    return Reservation(user_id=user_id, day=day, messages=messages, grant=int(grant), prompt_bound=prompt)


async def settle(store: StatementStore, reservation: Reservation, *, tokens: int, refund_message: bool = False) -> None:
    """Replace the reservation by the actual usage (on success, failure, disconnect or termination)."""
    if reservation.grant and tokens > reservation.grant:
        log.warning("usage_exceeded_reservation", user_id=reservation.user_id, tokens=tokens, grant=reservation.grant)
    params = _bind(
        user_id=reservation.user_id,
        day=reservation.day,
        tokens=tokens,
        grant=reservation.grant,
        messages=reservation.messages,
        now=datetime.now(UTC),
    )
    statement = _SETTLE_REFUND if refund_message and reservation.messages else _SETTLE
    await store.scalar(statement, params)


async def _refusal(
    engine: AsyncEngine, *, user_id: int, day: date, messages: int, need: int, timezone: str
) -> QuotaExceeded:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    _uc.c.messages,
                    _uc.c.tokens,
                    _uc.c.reserved_tokens,
                    _users.c.messages_per_day,
                    _users.c.tokens_per_day,
                )
                .select_from(_users.outerjoin(_uc, and_(_uc.c.user_id == _users.c.id, _uc.c.day == day)))
                .where(_users.c.id == user_id)
            )
        ).one()
    used_messages, used_tokens, reserved, message_limit, token_limit = (
        row[0] or 0,
        row[1] or 0,
        row[2] or 0,
        row[3],
        row[4],
    )
    reset = resets_at(timezone, day)
    retry_after = max(1, math.ceil((reset - datetime.now(UTC)).total_seconds()))
    when = reset.strftime("%Y-%m-%d %H:%M UTC")
    if message_limit is not None and used_messages + messages > message_limit:
        kind, message = (
            "messages",
            (
                f"Daily message quota reached: {used_messages} of {message_limit} messages used today. "
                f"It resets at {when}; ask an administrator to raise messages_per_day."
            ),
        )
        limit, remaining = message_limit, max(0, message_limit - used_messages)
    else:
        kind, limit = "tokens", token_limit or 0
        remaining = max(0, limit - used_tokens - reserved)
        message = (
            f"Daily token quota reached: {used_tokens} of {limit} tokens used today"
            + (f" and {reserved} held by requests in progress" if reserved else "")
            + f"; this request needs up to {need} (its prompt). It resets at {when}; "
            "send a shorter prompt or ask an administrator to raise tokens_per_day."
        )
    QUOTA_BLOCKS.labels(kind=kind).inc()
    headers = {
        "retry-after": str(retry_after),
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(retry_after),
    }
    return QuotaExceeded(message, headers=headers, param=kind)
