"""Writing an export: rows read in keyset batches inside one read-only transaction (so the files agree with each
other), masked, formatted and compressed in a worker thread while the next batch is read, into a ZIP for a
non-seekable stream; then `export.completed` in a transaction of its own. Memory stays bounded whatever the size
of the tables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import time
from typing import Any

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from gatehouse import __version__
from gatehouse.auth.actor import Actor
from gatehouse.core.logging import get_logger
from gatehouse.db.base import utcnow
from gatehouse.exports import pii
from gatehouse.exports.entities import ENTITIES, Entity, Field
from gatehouse.exports.files import Batch, Formatter, ZipStream, iso
from gatehouse.exports.service import ExportResult, ExportSpec, record_completed

log = get_logger("gatehouse.export")

BATCH_ROWS = 5000
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def _where(entity: Entity, spec: ExportSpec) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if spec.user_id is not None:
        conditions.append(entity.of_user(spec.user_id, spec.user_email or ""))
    if entity.time_column is not None:
        column = entity.field(entity.time_column).column
        if entity.time_column == "day":
            # A quota day is in when it overlaps [since, until).
            if spec.since is not None:
                conditions.append(column >= spec.since.date())
            if spec.until is not None:
                # Not `until.date() - 1 day`: that is before date.min for until 0001-01-01T00:00Z.
                until_day = spec.until.date()
                conditions.append(column < until_day if spec.until.time() == time(0) else column <= until_day)
        else:
            if spec.since is not None:
                conditions.append(column >= spec.since)
            if spec.until is not None:
                conditions.append(column < spec.until)
    return conditions


def _after(entity: Entity, last: tuple[Any, ...]) -> ColumnElement[bool]:
    """Rows after `last` in keyset order (one or two columns)."""
    first = entity.field(entity.keyset[0]).column
    if len(entity.keyset) == 1:
        return first > last[0]  # type: ignore[no-any-return]
    second = entity.field(entity.keyset[1]).column
    return or_(first > last[0], and_(first == last[0], second > last[1]))


async def _batches(
    session: AsyncSession, entity: Entity, spec: ExportSpec, fields: tuple[Field, ...]
) -> AsyncIterator[Batch]:
    names = [f.name for f in fields]
    key_index = [names.index(k) for k in entity.keyset]
    order = [entity.field(k).column for k in entity.keyset]
    size = min(entity.batch_rows or BATCH_ROWS, BATCH_ROWS)
    base = select(*(f.column.label(f.name) for f in fields)).order_by(*order).limit(size)
    conditions = _where(entity, spec)
    last: tuple[Any, ...] | None = None
    while True:
        query = base.where(*conditions, _after(entity, last)) if last is not None else base.where(*conditions)
        # Core, not the ORM: these are plain rows, and the ORM's row processing would double the time per row.
        connection = await session.connection()
        rows = (await connection.execute(query)).all()
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        last = tuple(rows[-1][i] for i in key_index)


def manifest(spec: ExportSpec, result: ExportResult) -> dict[str, Any]:
    """What the ZIP holds: who made it and when, the filters, and per entity its rows, size and SHA-256."""
    masked = spec.pii == "masked"

    def shown(text: str | None, mask: Callable[[str], str]) -> str | None:
        return mask(text) if masked and text is not None else text

    return {
        "manifest_version": MANIFEST_VERSION,
        "export_id": spec.export_id,
        "gatehouse_version": __version__,
        "created_at": iso(spec.created_at),
        "completed_at": iso(utcnow()),
        "created_by": shown(spec.created_by, pii.mask_email),
        "format": spec.format,
        "pii": spec.pii,
        "reason": shown(spec.reason, pii.mask_text),
        "filters": {
            "since": iso(spec.since),
            "until": iso(spec.until),
            "user_id": spec.user_id,
            "user": shown(spec.user_email, pii.mask_email),
        },
        "entities": {
            name: {
                **result.files[name],
                "rows": result.rows[name],
                "time_column": ENTITIES[name].time_column,
                "columns": [f.name for f in ENTITIES[name].columns(spec.pii)],
            }
            for name in spec.entities
        },
        "masking": None
        if not masked
        else {
            "email": "first two characters of the local part, then ***, then the domain",
            "phone": "first three and last two digits; the digits between become *",
            "ipv4": "last octet replaced by x",
            "ipv6": "first 48 bits, as a /48 network",
            "text": "emails, phone numbers and IP addresses in free text masked as above",
            "names": "users.display_name and block_reason: the email's local part in them masked as in the email; "
            "audit.details display_name values: first two characters, then ***",
            "left_out": [
                "audit.prev_hash",
                "audit.hash",
                "audit.details *_hash values",
                "responses.input_items",  # message contents: raw exports only
                "responses.response",
            ],
        },
        "csv_formulas": None
        if spec.format != "csv"
        else "a text cell starting with =, +, -, @, a tab or a carriage return starts with ' (shown as text)",
    }


Progress = Callable[[str, int], None]

# How long the read transaction may wait for the recipient to take one chunk (about one batch, compressed) on
# PostgreSQL: a client that stalls longer ends the export (no export.completed) rather than hold a snapshot
# (and the vacuum horizon) for as long as it likes.
READ_IDLE_SECONDS = 300


async def _read_transaction(session: AsyncSession) -> None:
    # One snapshot for every file: on PostgreSQL a repeatable-read transaction; on SQLite (WAL) the read-only
    # transaction is one already, and it never holds the write lock.
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        # The server ends the session when it is idle in this transaction for longer (waiting for the client).
        milliseconds = max(1, int(READ_IDLE_SECONDS * 1000))
        await session.execute(sql_text(f"SET LOCAL idle_in_transaction_session_timeout = {milliseconds}"))


async def _close_read(session: AsyncSession) -> None:
    """Close the read session; a connection the server ended (idle limit) after the last read is no error."""
    try:
        await session.close()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise


async def write_zip(
    sessionmaker: async_sessionmaker[AsyncSession],
    spec: ExportSpec,
    result: ExportResult,
    *,
    progress: Progress | None = None,
) -> AsyncIterator[bytes]:
    """The export's ZIP, chunk by chunk (about one batch of rows each); fills in `result` on the way.

    While a worker thread masks, formats and compresses one batch, the next one is read: at most two batches
    are in memory, whatever the size of the tables.
    """
    archive = ZipStream(spec.created_at)
    try:
        session = sessionmaker()
        try:
            await _read_transaction(session)
            for name in spec.entities:
                # Closed at once if the reader leaves: no batch is being written while a chunk waits to go out.
                async with contextlib.aclosing(_write_entity(session, archive, spec, result, name, progress)) as out:
                    async for chunk in out:
                        yield chunk
        finally:
            await _close_read(session)
        body = orjson.dumps(manifest(spec, result), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        archive.add(MANIFEST, body)
        archive.close()
    except BaseException:
        archive.discard()
        raise
    last = archive.take()
    result.zip_bytes, result.zip_sha256 = archive.size, archive.sha256
    if last:
        yield last


async def _write_entity(
    session: AsyncSession,
    archive: ZipStream,
    spec: ExportSpec,
    result: ExportResult,
    name: str,
    progress: Progress | None,
) -> AsyncGenerator[bytes, None]:
    """One entity's file: a worker thread masks, formats and compresses a batch while the next is read."""
    entity = ENTITIES[name]
    fields = entity.columns(spec.pii)
    formatter = Formatter(fields, spec.pii, spec.format)
    out = archive.open(f"{name}.{spec.format}")
    out.write(formatter.header())
    result.rows[name] = 0
    writing: asyncio.Future[None] | None = None
    try:
        async for batch in _batches(session, entity, spec, fields):
            if writing is not None:
                await writing
                if chunk := archive.take():
                    yield chunk
            writing = asyncio.ensure_future(asyncio.to_thread(out.write_rows, formatter, batch))
            result.rows[name] += len(batch)
            if progress is not None:
                progress(name, result.rows[name])
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            await asyncio.wait([writing])  # never leave a thread writing into the archive
    await asyncio.to_thread(out.close)
    result.files[name] = {"file": f"{name}.{spec.format}", "bytes": out.size, "sha256": out.sha256}
    if chunk := archive.take():
        yield chunk


async def stream(
    *,
    read_sessionmaker: async_sessionmaker[AsyncSession],
    sessionmaker: async_sessionmaker[AsyncSession],
    actor: Actor,
    spec: ExportSpec,
    result: ExportResult | None = None,
    progress: Progress | None = None,
) -> AsyncIterator[bytes]:
    """`write_zip`, then `export.completed` in a transaction of its own (an export cut short records none)."""
    result = result if result is not None else ExportResult()
    try:
        async for chunk in write_zip(read_sessionmaker, spec, result, progress=progress):
            yield chunk
    except Exception as exc:
        log.error("export_failed", export_id=spec.export_id, error=type(exc).__name__, rows=result.rows)
        raise
    try:
        async with sessionmaker() as session, session.begin():
            await record_completed(session, actor=actor, spec=spec, result=result)
    except Exception as exc:  # the recipient has the whole file by now: say that its audit row is missing
        log.error("export_completed_audit_failed", export_id=spec.export_id, error=type(exc).__name__)
        return
    log.info("export_completed", export_id=spec.export_id, rows=result.rows, bytes=result.zip_bytes)
