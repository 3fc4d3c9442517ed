"""Daily quotas: reserve before calling the upstream, settle to the actual usage afterwards.

Each is one atomic write: the conditional UPDATE of `usage_counter`, checked against the user's limits
*inside* the statement (a correlated subquery), so it is exact on any number of replicas and sees a changed
limit at once, together with the request's own `quota_reservation` row (who holds what; see
limits/recovery.py for what happens when its replica dies). On PostgreSQL that is one statement (a
data-modifying CTE); on SQLite, two statements in one transaction on the loop's own connection.

A request is admitted only if it fits what remains:

- messages: `messages + 1 <= messages_per_day`;
- tokens: it wants `want` (its prompt bound plus the completion it may produce: the client's max_tokens, the
  model's output cap, or DEFAULT_COMPLETION_ALLOWANCE). Its *target* is `min(want, limit - used)`: never more
  than remains. It is admitted when the target is at least `need` (the prompt bound plus one token) and no more
  than what other requests' holds leave free; the grant is the target. The completion cap sent upstream
  (`max_tokens` / `num_predict`) is the grant minus the prompt bound, so the upstream cannot produce more than
  was reserved.

When the target does not fit only because of other requests' holds, the request waits for them to settle,
first come first served, for at most QUOTA_WAIT_SECONDS (`quota_busy` after that); when what remains is below
`need`, the quota is used up (`quota_exceeded`).

The prompt bound counts UTF-8 bytes (a byte-level BPE token covers at least one byte) plus framing per
message, plus IMAGE_TOKEN_ALLOWANCE per image: it is never below the real prompt for text. Settlement
records what the upstream reported; when it reported nothing, an estimate (see `estimate_usage`) capped at
the grant, so the recorded total still never passes the quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.auth.errors import InvalidApiKey
from gatehouse.auth.models import User
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import QUOTA_BLOCKS, QUOTA_WAIT
from gatehouse.core.tasks import every
from gatehouse.core.tasks import stop as stop_task
from gatehouse.db.base import UTCDateTime
from gatehouse.db.errors import is_lost_connection
from gatehouse.db.statements import SqliteStore, StatementStore
from gatehouse.limits import ledger
from gatehouse.limits.budgets import Budget, period_end, period_start
from gatehouse.limits.errors import QuotaBusy, QuotaExceeded
from gatehouse.limits.models import QuotaReservation, UsageCounter
from gatehouse.limits.prices.money import decimal_of_nanos
from gatehouse.limits.prices.table import Price

log = get_logger("gatehouse.quotas")
MESSAGE_FRAMING_TOKENS = 8  # role markers and separators a chat template adds per message
REQUEST_FRAMING_TOKENS = 16  # the template's fixed start and the assistant's turn marker

POLL_SECONDS = 0.25  # the first waiter re-checks this often: other replicas' settlements wake nobody here
BUSY_RETRY_SECONDS = 2  # Retry-After of a quota_busy refusal
GENERAL = "general"  # in a settlement's parameters: settle through limits/ledger.py

_uc: Table = UsageCounter.__table__  # type: ignore[assignment]
_res: Table = QuotaReservation.__table__  # type: ignore[assignment]
_users: Table = User.__table__  # type: ignore[assignment]
_message_limit = select(_users.c.messages_per_day).where(_users.c.id == _uc.c.user_id).scalar_subquery()
_token_limit = select(_users.c.tokens_per_day).where(_users.c.id == _uc.c.user_id).scalar_subquery()


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one admitted request holds until it settles."""

    id: int
    user_id: int
    day: date
    messages: int
    grant: int  # tokens reserved; 0 when the user has no token quota
    prompt_bound: int
    cost: int = 0  # the money held on each of its counters (the grant's worst cost), in billionths
    budgets: tuple[str, ...] = ()  # the budget counters it holds beside the user's day (their keys)

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


# The statements are built once, with typed bind parameters: building a SQLAlchemy expression costs more than
# executing it, and a statement object reused keeps its compiled form in SQLAlchemy's cache (and the stores'
# own, db/statements.py). Names are prefixed: SQLAlchemy reserves column names for the SET clause's parameters.
_TYPES: dict[str, Any] = {
    "id": BigInteger(),
    "replica": String(64),
    "user_id": Integer(),
    "day": Date(),
    "messages": Integer(),
    "need": BigInteger(),
    "want": BigInteger(),
    "tokens": BigInteger(),
    "cost": BigInteger(),
    "prompt": BigInteger(),
    "completion": BigInteger(),
    "prev": BigInteger(),  # the first statement's value, in a two-statement chain (SQLite)
    "now": UTCDateTime(),
}
_p: dict[str, Any] = {name: bindparam("p_" + name, type_=kind) for name, kind in _TYPES.items()}
_remaining = _token_limit - _uc.c.tokens
_available = _remaining - _uc.c.reserved_tokens
_target = case((_remaining < _p["want"], _remaining), else_=_p["want"])
_grant = case((_token_limit.is_(None), 0), else_=_target)
_this_counter = and_(_uc.c.user_id == _p["user_id"], _uc.c.day == _p["day"])
_RESERVE_COUNTER = (
    update(_uc)
    .where(_this_counter)
    .where(or_(_message_limit.is_(None), _uc.c.messages + _p["messages"] <= _message_limit))
    .where(or_(_token_limit.is_(None), and_(_remaining >= _p["need"], _available >= _target)))
    .values(
        messages=_uc.c.messages + _p["messages"],
        reserved_tokens=_uc.c.reserved_tokens + _grant,
        last_grant=_grant,
        updated_at=_p["now"],
    )
    .returning(_uc.c.last_grant)
)
_RESERVATION_COLUMNS = (
    *("id", "user_id", "day", "replica", "messages"),
    *("granted", "prompt_tokens", "completion_tokens", "created_at", "cost", "budgets"),
)


def _reservation_values(granted: Any) -> list[Any]:
    zero = literal(0, BigInteger())
    values = [_p["id"], _p["user_id"], _p["day"], _p["replica"], _p["messages"], granted, _p["prompt"], zero]
    return [*values, _p["now"], zero, literal("", String(1000))]


# SQLite: the counter's UPDATE, then (when it admitted the request) the reservation's row with its grant.
_INSERT_RESERVATION = insert(_res).values(dict(zip(_RESERVATION_COLUMNS, _reservation_values(_p["prev"]), strict=True)))
# PostgreSQL: both in one statement.
_admitted = _RESERVE_COUNTER.cte("admitted")
_RESERVE_PG = (
    insert(_res)
    .from_select(list(_RESERVATION_COLUMNS), select(*_reservation_values(_admitted.c.last_grant)))
    .returning(_res.c.granted)
)


def _settled_counter(granted: Any, messages: Any, *, refund: bool) -> dict[str, Any]:
    released = _uc.c.reserved_tokens - granted
    values: dict[str, Any] = {
        "tokens": _uc.c.tokens + _p["tokens"],
        "cost_nanos": _uc.c.cost_nanos + _p["cost"],
        # Never below zero: a counter reset (`gatehouse usage reset`) may have dropped the reservation.
        "reserved_tokens": case((released < 0, 0), else_=released),
        "updated_at": _p["now"],
    }
    if refund:
        values["messages"] = case((_uc.c.messages >= messages, _uc.c.messages - messages), else_=0)
    return values


# Settling removes the reservation's row and applies it to the counter only if the row was still there: a
# replica presumed dead whose reservations were recovered (limits/recovery.py) cannot settle them twice.
_DELETE_RESERVATION = delete(_res).where(_res.c.id == _p["id"]).returning(_res.c.granted)
_SETTLE_AFTER_DELETE = {
    refund: update(_uc).where(_this_counter).values(**_settled_counter(_p["prev"], _p["messages"], refund=refund))
    for refund in (False, True)
}
_released = (
    delete(_res)
    .where(_res.c.id == _p["id"])
    .returning(_res.c.user_id, _res.c.day, _res.c.granted, _res.c.messages)
    .cte("released")
)
_SETTLE_PG = {
    refund: update(_uc)
    .where(_uc.c.user_id == _released.c.user_id, _uc.c.day == _released.c.day)
    .values(**_settled_counter(_released.c.granted, _released.c.messages, refund=refund))
    for refund in (False, True)
}
_INSERT_COUNTER = {
    dialect: builder(_uc)
    .values(
        user_id=_p["user_id"],
        day=_p["day"],
        messages=0,
        tokens=0,
        reserved_tokens=0,
        last_grant=0,
        cost_nanos=0,
        reserved_cost=0,
        updated_at=_p["now"],
    )
    .on_conflict_do_nothing(index_elements=["user_id", "day"])
    for dialect, builder in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_CHECKPOINT = (
    update(_res)
    .where(_res.c.id == _p["id"])
    .values(prompt_tokens=_p["prompt"], completion_tokens=_p["completion"], checkpoint_at=_p["now"])
)


def _bind(**values: Any) -> dict[str, Any]:
    return {"p_" + name: value for name, value in values.items()}


@dataclass(slots=True)
class _Hold:
    """A reservation this replica holds, with how to read its progress and what to do if it is taken away."""

    reservation: Reservation
    progress: Callable[[], tuple[int, int]]  # (prompt, completion) tokens so far, as settling now would count
    lost: Callable[[], None]
    checkpointed: tuple[int, int] = (-1, -1)


class Quotas:
    """Reserves and settles this replica's requests, makes the ones that only wait for others' holds queue, and
    checkpoints the progress of those in flight (one batched statement per interval, off the request path)."""

    def __init__(
        self,
        store: StatementStore,
        *,
        replica: str,
        timezone: str,
        wait_seconds: float,
        checkpoint_seconds: float,
        currency: str = "USD",
    ) -> None:
        self.store = store
        self.currency = currency
        self.replica = replica
        self.timezone = timezone
        self.wait_seconds = wait_seconds
        self.checkpoint_seconds = checkpoint_seconds
        self._pg = store.dialect_name == "postgresql"
        self._unyielding = isinstance(store, SqliteStore)
        self._queues: dict[int, deque[asyncio.Event]] = {}
        self._holds: dict[int, _Hold] = {}
        self._unsettled: list[tuple[dict[str, Any], bool]] = []  # settlements that failed, retried by `checkpoint`
        self._background: set[asyncio.Future[Any]] = set()
        self._task: asyncio.Task[None] | None = None

    # --- admission ---------------------------------------------------------------------------------

    async def reserve(
        self,
        *,
        user_id: int,
        messages: int,
        prompt_bound: int,
        prompt_estimate: int,
        want_completion: int,
        budgets: tuple[Budget, ...] = (),
        price: Price | None = None,
        spend_limited: bool = False,
    ) -> Reservation:
        """Admit a request if it fits its user's day and its other `budgets` (limits/ledger.py), holding its tokens
        (and, at `price`, their worst cost); wait (first come, first served) while it does not fit only because of
        other requests' holds; raise QuotaExceeded or QuotaBusy (429) otherwise. `spend_limited`: the user's day
        has a spend limit."""
        need = prompt_bound + (1 if messages else 0)
        attempt = _Attempt(user_id, messages, need, prompt_bound, prompt_estimate, prompt_bound + want_completion)
        attempt.budgets, attempt.price = budgets, price
        attempt.general = bool(budgets) or (spend_limited and price is not None)
        if user_id not in self._queues:  # nobody of this user waiting here: try at once (the hot path)
            reservation = await self._try(attempt)
            if reservation is not None:
                return reservation
            if self.wait_seconds <= 0:
                raise self._busy(attempt, waited=0.0)
        return await self._wait(attempt)

    async def _try(self, attempt: _Attempt) -> Reservation | None:
        """One attempt: the reservation, or None when only other holds stand in the way; raises QuotaExceeded."""
        attempt.day = quota_day(self.timezone)  # each attempt: a wait may cross midnight
        if attempt.general:
            return await self._try_general(attempt)
        params = _bind(
            id=secrets.randbits(63),
            replica=self.replica,
            user_id=attempt.user_id,
            day=attempt.day,
            messages=attempt.messages,
            need=attempt.need,
            want=attempt.want,
            prompt=attempt.prompt_estimate,
            now=datetime.now(UTC),
        )
        grant = await self._reserve(params)
        if grant is None:
            state = await _counter_state(self.store.engine, attempt.user_id, attempt.day)
            if state.missing:  # the first request of the user's day: create the counter, then try again
                await self.store.scalar(_INSERT_COUNTER[self.store.dialect_name], params)
                grant = await self._reserve(params)
                if grant is None:
                    state = await _counter_state(self.store.engine, attempt.user_id, attempt.day)
            if grant is None:
                attempt.state = state
                if state.used_up(attempt.messages, attempt.need):
                    raise _exceeded(state, attempt, self.timezone)
                return None
        return Reservation(
            id=params["p_id"],
            user_id=attempt.user_id,
            day=attempt.day,
            messages=attempt.messages,
            grant=int(grant),
            prompt_bound=attempt.prompt_bound,
        )

    async def _reserve(self, params: dict[str, Any]) -> Any:
        """The reservation's statement(s), shielded: a request cancelled while they run (its client gone, the
        shutdown) must not leave behind a committed reservation that nobody settles. SQLite's store needs no
        shield (and is spared a task per request): it can only be cancelled while it waits for the write lock,
        before anything was written; from BEGIN to COMMIT it runs without yielding."""
        if self._unyielding:
            return await self.store.chain(_RESERVE_COUNTER, _INSERT_RESERVATION, params)
        task = asyncio.ensure_future(
            self.store.scalar(_RESERVE_PG, params)
            if self._pg
            else self.store.chain(_RESERVE_COUNTER, _INSERT_RESERVATION, params)
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda done: self._release_orphan(done, params))
            self._background.add(task)  # the shutdown waits for it, and for what it gives back
            task.add_done_callback(self._background.discard)
            raise
        except DBAPIError as exc:
            if exc.statement is not None and (exc.connection_invalidated or is_lost_connection(exc)):
                self._release_if_committed(params)
            raise

    def _release_if_committed(self, params: dict[str, Any]) -> None:
        """The connection broke after the reservation was sent (PostgreSQL restarting, a network cut): it may have
        committed all the same, and nobody would settle it while this replica lives. Its release waits with the
        failed settlements and runs once the database answers again; a no-op when it never was (settling finds
        nothing), else the hold and the message are given back: the request was refused."""
        release = _bind(
            id=params["p_id"],
            user_id=params["p_user_id"],
            day=params["p_day"],
            tokens=0,
            cost=0,
            messages=params["p_messages"],
            now=datetime.now(UTC),
        )
        self._unsettled.append((release, True))

    def _release_orphan(self, task: asyncio.Future[Any], params: dict[str, Any]) -> None:
        """A reservation taken for a request that was cancelled meanwhile: give it back at once."""
        if task.cancelled() or task.exception() is not None or task.result() is None:
            return
        orphan = Reservation(
            id=params["p_id"],
            user_id=params["p_user_id"],
            day=params["p_day"],
            messages=params["p_messages"],
            grant=int(task.result()),
            prompt_bound=params["p_need"],
        )
        settling = asyncio.ensure_future(self.settle(orphan, tokens=0, refund_message=True))
        self._background.add(settling)
        settling.add_done_callback(self._background.discard)

    async def _try_general(self, attempt: _Attempt) -> Reservation | None:
        """One attempt against several counters (limits/ledger.py), in one transaction; shielded from cancellation
        as `_reserve` is."""
        now = datetime.now(UTC)
        keys = {
            b.key(period_start(self.timezone, b.period, now)): (b, period_start(self.timezone, b.period, now))
            for b in attempt.budgets
        }
        task = asyncio.ensure_future(self._general_transaction(attempt, keys))
        try:
            outcome, reservation_id = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda done: self._release_general_orphan(done, attempt, sorted(keys)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise
        if outcome is None:  # the user is gone
            raise InvalidApiKey("This account no longer exists.")
        if outcome.refusal is not None:
            attempt.refusal = outcome.refusal
            if outcome.refusal.exceeded:
                raise _budget_exceeded(outcome.refusal, attempt, self.timezone, self.currency)
            return None
        return Reservation(
            id=reservation_id,
            user_id=attempt.user_id,
            day=attempt.day,
            messages=attempt.messages,
            grant=outcome.grant,
            prompt_bound=attempt.prompt_bound,
            cost=outcome.cost,
            budgets=tuple(sorted(keys)),
        )

    async def _general_transaction(
        self, attempt: _Attempt, keys: dict[str, tuple[Budget, date]]
    ) -> tuple[ledger.Outcome | None, int]:
        try:
            return await self._hold_general(attempt, keys)
        except _Gone:  # the user was deleted meanwhile: nothing written
            return None, 0

    async def _hold_general(
        self, attempt: _Attempt, keys: dict[str, tuple[Budget, date]]
    ) -> tuple[ledger.Outcome | None, int]:
        async with self._transaction() as conn:
            counters = await ledger.lock_counters(
                conn, pg=self._pg, user_id=attempt.user_id, day=attempt.day, keys=keys
            )
            if counters is None:
                raise _Gone
            outcome = ledger.decide(
                counters,
                messages=attempt.messages,
                need=attempt.need,
                want=attempt.want,
                prompt_bound=attempt.prompt_bound,
                price=attempt.price,
            )
            reservation_id = 0
            if outcome.refusal is None:
                reservation_id = await ledger.hold(
                    conn,
                    replica=self.replica,
                    user_id=attempt.user_id,
                    day=attempt.day,
                    keys=sorted(keys),
                    messages=attempt.messages,
                    outcome=outcome,
                    prompt_estimate=attempt.prompt_estimate,
                    price=attempt.price,
                )
            return outcome, reservation_id  # committed: the counters created stay, whatever the outcome

    def _release_general_orphan(self, task: asyncio.Future[Any], attempt: _Attempt, keys: list[str]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        outcome, reservation_id = task.result()
        if outcome is None or outcome.refusal is not None:
            return
        orphan = Reservation(
            id=reservation_id,
            user_id=attempt.user_id,
            day=attempt.day,
            messages=attempt.messages,
            grant=outcome.grant,
            prompt_bound=attempt.prompt_bound,
            cost=outcome.cost,
            budgets=tuple(keys),
        )
        settling = asyncio.ensure_future(self.settle(orphan, tokens=0, refund_message=True))
        self._background.add(settling)
        settling.add_done_callback(self._background.discard)

    async def _wait(self, attempt: _Attempt) -> Reservation:
        """Queue behind this user's earlier waiters; the first in line retries whenever one of the user's requests
        settles here, and every POLL_SECONDS (for settlements on other replicas)."""
        queue = self._queues.setdefault(attempt.user_id, deque())
        ticket = asyncio.Event()
        queue.append(ticket)
        started = monotonic()
        deadline = started + self.wait_seconds
        try:
            while True:
                if queue[0] is ticket:
                    ticket.clear()  # before trying: a settlement during the attempt wakes it again
                    reservation = await self._try(attempt)
                    if reservation is not None:
                        QUOTA_WAIT.observe(monotonic() - started)
                        return reservation
                left = deadline - monotonic()
                if left <= 0:
                    QUOTA_WAIT.observe(monotonic() - started)
                    raise self._busy(attempt, waited=monotonic() - started)
                try:
                    async with asyncio.timeout(min(POLL_SECONDS, left) if queue[0] is ticket else left):
                        await ticket.wait()
                except TimeoutError:
                    pass
        finally:
            was_first = queue[0] is ticket
            queue.remove(ticket)
            if not queue:
                del self._queues[attempt.user_id]
            elif was_first:
                queue[0].set()  # the next in line tries now

    def _busy(self, attempt: _Attempt, *, waited: float) -> QuotaBusy:
        QUOTA_BLOCKS.labels(kind="busy").inc()
        if attempt.refusal is not None:
            return _budget_busy(attempt.refusal, waited=waited, currency=self.currency)
        state = attempt.state
        detail = ""
        if state is not None and state.token_limit is not None:
            left = max(0, state.token_limit - state.tokens)
            detail = (
                f"{left} of your {state.token_limit} daily tokens remain, but {state.reserved} are held by your "
                "requests in progress"
            )
        message = (
            (detail or "Your requests in progress hold the rest of your quota")
            + (f"; this request waited {waited:.1f} s for them to finish" if waited else "")
            + f". Retry in {BUSY_RETRY_SECONDS} s, or send fewer requests at once."
        )
        headers = {"retry-after": str(BUSY_RETRY_SECONDS), "x-ratelimit-reset": str(BUSY_RETRY_SECONDS)}
        if state is not None and state.token_limit is not None:
            headers["x-ratelimit-limit"] = str(state.token_limit)
            headers["x-ratelimit-remaining"] = str(max(0, state.token_limit - state.tokens - state.reserved))
        return QuotaBusy(message, headers=headers, param="tokens")

    # --- settlement --------------------------------------------------------------------------------

    async def settle(
        self, reservation: Reservation, *, tokens: int, cost: int = 0, refund_message: bool = False
    ) -> None:
        """Replace the reservation by the actual usage (tokens, and `cost` in billionths) on success, failure,
        disconnect or termination, once."""
        self._holds.pop(reservation.id, None)
        if reservation.grant and tokens > reservation.grant:
            log.warning(
                "usage_exceeded_reservation", user_id=reservation.user_id, tokens=tokens, grant=reservation.grant
            )
        if reservation.cost and cost > reservation.cost:
            log.warning("spend_exceeded_reservation", user_id=reservation.user_id, cost=cost, held=reservation.cost)
        params = _bind(
            id=reservation.id,
            user_id=reservation.user_id,
            day=reservation.day,
            tokens=tokens,
            cost=cost,
            messages=reservation.messages,
            now=datetime.now(UTC),
        )
        if reservation.budgets or reservation.cost:
            params[GENERAL] = True
        refund = refund_message and bool(reservation.messages)
        try:
            await self._settle(params, refund)
        except Exception:
            # Kept for the checkpoint loop to retry: settling twice is harmless (the first deletes the reservation,
            # a second finds nothing), but a settlement lost would hold its tokens for good.
            self._unsettled.append((params, refund))
            raise
        finally:
            queue = self._queues.get(reservation.user_id)
            if queue:
                queue[0].set()  # the first of this user's waiters tries again now

    async def _settle(self, params: dict[str, Any], refund: bool) -> None:
        if params.get(GENERAL):
            await self._settle_general(params, refund)
            return
        if self._pg:
            await self.store.scalar(_SETTLE_PG[refund], params)
        else:
            await self.store.chain(_DELETE_RESERVATION, _SETTLE_AFTER_DELETE[refund], params)

    async def _settle_general(self, params: dict[str, Any], refund: bool) -> None:
        """A reservation holding budget counters or money: released from all of them in one transaction."""
        async with self._transaction() as conn:
            await ledger.settle(
                conn, reservation_id=params["p_id"], tokens=params["p_tokens"], cost=params["p_cost"], refund=refund
            )

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the autocommit engine (several statements of limits/ledger.py): committed when the block
        ends, rolled back when it raises (cancellation included). SQLite takes the write lock at once."""
        async with self.store.engine.connect() as conn:
            await conn.exec_driver_sql("BEGIN" if self._pg else "BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.exec_driver_sql("ROLLBACK")
                raise
            await conn.exec_driver_sql("COMMIT")

    async def retry_settlements(self) -> int:
        """Settle again what failed to settle (the database was away); how many are still waiting."""
        pending, self._unsettled = self._unsettled, []
        for number, (params, refund) in enumerate(pending):
            try:
                await self._settle(params, refund)
            except Exception:
                self._unsettled.extend(pending[number:])
                raise
            log.info("quota_settlement_retried", reservation=params["p_id"], user_id=params["p_user_id"])
        return len(self._unsettled)

    # --- progress ----------------------------------------------------------------------------------

    def track(
        self, reservation: Reservation, *, progress: Callable[[], tuple[int, int]], lost: Callable[[], None]
    ) -> None:
        """Checkpoint this reservation's progress until it settles; call `lost()` if another replica recovered it
        (this one was presumed dead: its heartbeat went stale), so that the request stops producing."""
        self._holds[reservation.id] = _Hold(reservation, progress, lost)

    async def checkpoint(self) -> int:
        """Write the progress of the reservations that moved since their last checkpoint, in one batch; stop the
        requests whose reservation is gone. How many were written."""
        if self._unsettled:
            await self.retry_settlements()
        moved, rows, now = [], [], datetime.now(UTC)
        for hold in list(self._holds.values()):
            progress = hold.progress()
            if progress != hold.checkpointed:
                moved.append((hold, progress))
                rows.append(_bind(id=hold.reservation.id, prompt=progress[0], completion=progress[1], now=now))
        if rows:
            await self.store.many(_CHECKPOINT, rows)
            for hold, progress in moved:
                hold.checkpointed = progress
        if self._holds:
            await self._find_lost()
        return len(rows)

    async def _find_lost(self) -> None:
        ours = list(self._holds)
        async with self.store.engine.connect() as conn:
            present = set((await conn.execute(select(_res.c.id).where(_res.c.replica == self.replica))).scalars().all())
        for reservation_id in ours:
            hold = self._holds.get(reservation_id)
            if hold is not None and reservation_id not in present:
                log.error("quota_reservation_lost", reservation=reservation_id, user_id=hold.reservation.user_id)
                self._holds.pop(reservation_id, None)
                hold.lost()

    async def start(self) -> None:
        self._task = asyncio.create_task(
            every(self.checkpoint_seconds, self.checkpoint, log=log, event="quota_checkpoint_failed"),
            name="gatehouse-quota-checkpoints",
        )

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
        while self._background:  # a reservation finishing after its request was cancelled, then its release
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._unsettled:
            try:
                await self.retry_settlements()
            except Exception as exc:  # recovered by the other replicas, or at the next start
                log.error("quota_settlements_unsent", count=len(self._unsettled), error=f"{type(exc).__name__}: {exc}")


class _Gone(Exception):
    """The user was deleted while their request was being admitted (the transaction is rolled back)."""


@dataclass(slots=True)
class _CounterState:
    messages: int
    tokens: int
    reserved: int
    message_limit: int | None
    token_limit: int | None
    missing: bool  # no counter yet for this user and day

    def used_up(self, messages: int, need: int) -> bool:
        """Refused by what was used (not by what others hold): the messages, or fewer tokens left than `need`."""
        if self.message_limit is not None and self.messages + messages > self.message_limit:
            return True
        return self.token_limit is not None and self.token_limit - self.tokens < need


@dataclass(slots=True)
class _Attempt:
    user_id: int
    messages: int
    need: int
    prompt_bound: int
    prompt_estimate: int
    want: int
    day: date = date.min  # set by each attempt
    state: _CounterState | None = None
    budgets: tuple[Budget, ...] = ()
    price: Price | None = None
    general: bool = False  # several counters, or money: limits/ledger.py
    refusal: ledger.Refusal | None = None  # the general path's last refusal


async def _counter_state(engine: AsyncEngine, user_id: int, day: date) -> _CounterState:
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
        ).one_or_none()
    if row is None:  # deleted since its key was cached here
        raise InvalidApiKey("This account no longer exists.")
    return _CounterState(row[0] or 0, row[1] or 0, row[2] or 0, row[3], row[4], missing=row[0] is None)


def _exceeded(state: _CounterState, attempt: _Attempt, timezone: str) -> QuotaExceeded:
    used_messages, used_tokens, reserved = state.messages, state.tokens, state.reserved
    message_limit, token_limit, need = state.message_limit, state.token_limit, attempt.need
    reset = resets_at(timezone, attempt.day)
    retry_after = max(1, math.ceil((reset - datetime.now(UTC)).total_seconds()))
    when = reset.strftime("%Y-%m-%d %H:%M UTC")
    if message_limit is not None and used_messages + attempt.messages > message_limit:
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


# --- the refusals of several counters (limits/ledger.py) ---------------------------------------------

_LIMIT_NAMES = {"messages": "message quota", "tokens": "token quota", "spend": "spend limit"}


def _amount(measure: str, value: int, currency: str) -> str:
    if measure == "spend":
        return f"{decimal_of_nanos(value)} {currency}"
    return f"{value:,} {measure}"


def _limit_of(refusal: ledger.Refusal) -> int:
    limits = refusal.counter.limits
    value = {"messages": limits.messages, "tokens": limits.tokens, "spend": limits.spend}[refusal.measure]
    return value or 0


def _used(refusal: ledger.Refusal) -> tuple[int, int]:
    counter = refusal.counter
    if refusal.measure == "messages":
        return counter.messages, 0
    if refusal.measure == "tokens":
        return counter.tokens, counter.reserved_tokens
    return counter.cost, counter.reserved_cost


def _param(refusal: ledger.Refusal) -> str:
    counter = refusal.counter
    period = counter.measure_period
    return f"spend_per_{period}" if refusal.measure == "spend" else f"{refusal.measure}_per_{period}"


def _resets(refusal: ledger.Refusal, attempt: _Attempt, timezone: str) -> datetime:
    counter = refusal.counter
    if counter.budget is None or counter.start is None:
        return resets_at(timezone, attempt.day)
    return period_end(timezone, counter.budget.period, counter.start)


def _budget_exceeded(refusal: ledger.Refusal, attempt: _Attempt, timezone: str, currency: str) -> QuotaExceeded:
    """A budget used up: which one, how much of it, when it resets, what to do."""
    limit = _limit_of(refusal)
    used, held = _used(refusal)
    reset = _resets(refusal, attempt, timezone)
    retry_after = max(1, math.ceil((reset - datetime.now(UTC)).total_seconds()))
    what = f"{refusal.counter.name}'s {_LIMIT_NAMES[refusal.measure]}"
    message = (
        f"The {what} is reached: {_amount(refusal.measure, used, currency)} of "
        f"{_amount(refusal.measure, limit, currency)} used"
        + (f", {_amount(refusal.measure, held, currency)} held by requests in progress" if held else "")
        + (f"; this request needs up to {_amount(refusal.measure, refusal.need, currency)}" if refusal.need else "")
        + f". It resets at {reset.strftime('%Y-%m-%d %H:%M UTC')}; "
        + ("send a shorter prompt, use a cheaper model, or " if refusal.measure != "messages" else "")
        + "ask an administrator to raise it."
    )
    QUOTA_BLOCKS.labels(kind=refusal.measure).inc()
    remaining = max(0, limit - used - held)
    headers = {
        "retry-after": str(retry_after),
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(retry_after),
    }
    return QuotaExceeded(message.replace("The your", "Your"), headers=headers, param=_param(refusal))


def _budget_busy(refusal: ledger.Refusal, *, waited: float, currency: str) -> QuotaBusy:
    used, held = _used(refusal)
    limit = _limit_of(refusal)
    what = f"{refusal.counter.name}'s {_LIMIT_NAMES[refusal.measure]}"
    message = (
        f"{_amount(refusal.measure, max(0, limit - used), currency)} of the {what} remain, but "
        f"{_amount(refusal.measure, held, currency)} are held by requests in progress"
        + (f"; this request waited {waited:.1f} s for them to finish" if waited else "")
        + f". Retry in {BUSY_RETRY_SECONDS} s, or send fewer requests at once."
    ).replace("the your", "your")
    headers = {
        "retry-after": str(BUSY_RETRY_SECONDS),
        "x-ratelimit-reset": str(BUSY_RETRY_SECONDS),
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(max(0, limit - used - held)),
    }
    return QuotaBusy(message, headers=headers, param=_param(refusal))
