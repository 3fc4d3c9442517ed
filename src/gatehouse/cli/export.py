"""`gatehouse export`: write an export ZIP (exports/) to a file or stdout, audited as `cli`."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, cast

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn

from gatehouse.cli.common import CLI_ACTOR, console, err_console, quiet_settings, run
from gatehouse.db.base import utcnow
from gatehouse.db.engine import create_engine, create_sessionmaker, read_only
from gatehouse.errors import ValidationFailed
from gatehouse.exports import service, writer
from gatehouse.exports.entities import ENTITY_NAMES, PiiMode
from gatehouse.exports.files import Format
from gatehouse.settings import Settings


@dataclass
class Written:
    """What an export produced: where, its spec, its result."""

    path: Path | None  # None: stdout
    spec: service.ExportSpec
    result: service.ExportResult


@contextmanager
def _output(out: Path | None) -> Iterator[BinaryIO]:
    """The file to write (a new `.part` file beside it, renamed into place on success), or stdout.

    The file is created readable by its owner only (0600, whatever the umask): an export holds personal data,
    a raw one all of it. A `.part` file of its own (created with O_EXCL, a random name): two exports to the
    same path never write into one file.
    """
    if out is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    descriptor, name = tempfile.mkstemp(prefix=f"{out.name}.", suffix=".part", dir=out.parent)
    partial = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


async def write_export(
    settings: Settings,
    *,
    out: Path | None,
    entities: list[str],
    format: Format = "csv",
    pii_mode: PiiMode = "masked",
    since: datetime | None = None,
    until: datetime | None = None,
    user: str | int | None = None,
    reason: str | None = None,
    show_progress: bool = False,
) -> Written:
    """Audit and write one export (also used by `gatehouse users delete --export-first`)."""
    engine = create_engine(settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            spec = await service.prepare(
                session,
                actor=CLI_ACTOR,
                actor_role=None,
                entities=entities,
                format=format,
                pii_mode=pii_mode,
                since=since,
                until=until,
                user=user,
                reason=reason,
            )
        result = service.ExportResult()
        with _output(out) as handle, _progress(show_progress) as progress:
            async for chunk in writer.stream(
                read_sessionmaker=create_sessionmaker(read_only(engine)),
                sessionmaker=sessionmaker,
                actor=CLI_ACTOR,
                spec=spec,
                result=result,
                progress=progress,
            ):
                await asyncio.to_thread(handle.write, chunk)
        return Written(out, spec, result)
    finally:
        await engine.dispose()


@contextmanager
def _progress(show: bool) -> Iterator[writer.Progress | None]:
    if not show:
        yield None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(entity: str, rows: int) -> None:
            if entity not in tasks:
                tasks[entity] = bar.add_task(entity)
            bar.update(tasks[entity], description=f"{entity}: {rows:,} rows")

        yield update


def default_path(spec_time: str, stem: str = "gatehouse-export") -> Path:
    """./gatehouse-export-<UTC time>.zip."""
    return Path(f"{stem}-{spec_time}.zip")


def summary(written: Written) -> None:
    """Rows per entity, the file, its size and SHA-256 (on stderr when the ZIP went to stdout)."""
    printer = console if written.path is not None else err_console
    for name, rows in written.result.rows.items():
        printer.print(f"{name}: {rows:,} rows", highlight=False)
    where = str(written.path) if written.path is not None else "stdout"
    printer.print(
        f"wrote {where} ({written.result.zip_bytes:,} bytes, {written.spec.pii}, {written.spec.format}); "
        f"sha256 {written.result.zip_sha256}; export id {written.spec.export_id}",
        highlight=False,
        soft_wrap=True,
    )


def export(
    entities: str = typer.Option(",".join(ENTITY_NAMES), help=f"Comma-separated, any of: {', '.join(ENTITY_NAMES)}."),
    since: str | None = typer.Option(None, help="From this date or time on (2026-11-01 or 2026-11-01T08:00:00Z)."),
    until: str | None = typer.Option(None, help="Before this date or time."),
    user: str | None = typer.Option(None, "--user", help="Only this user's rows (their email or id)."),
    format: str = typer.Option("csv", "--format", help="csv or jsonl."),
    pii: str = typer.Option("masked", "--pii", help="masked (default) or raw (needs --reason; audited)."),
    reason: str | None = typer.Option(None, help="Why (e.g. a ticket number); required with --pii raw."),
    out: str | None = typer.Option(
        None, "--out", help="The ZIP to write (default ./gatehouse-export-<time>.zip); - for stdout."
    ),
) -> None:
    """Export users, usage, requests, audit, invites and keys as a ZIP of CSV (or JSONL) files with a manifest.

    PII (emails, phone numbers, IP addresses) is masked unless --pii raw; every export is audited.
    """
    settings = quiet_settings()
    if format not in ("csv", "jsonl") or pii not in ("masked", "raw"):
        err_console.print("[red]--format must be csv or jsonl, --pii masked or raw.[/red]")
        raise typer.Exit(2)
    try:
        since_at = service.parse_day_or_time(since, name="since") if since else None
        until_at = service.parse_day_or_time(until, name="until") if until else None
    except ValidationFailed as exc:
        err_console.print(f"[red]{escape(exc.message)}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
    names = [e.strip() for e in entities.split(",") if e.strip()]
    to_stdout = out == "-"
    path = None if to_stdout else Path(out) if out else None

    async def go() -> Written:
        target = path
        if target is None and not to_stdout:
            target = default_path(utcnow().strftime("%Y%m%dT%H%M%SZ"))
        return await write_export(
            settings,
            out=target,
            entities=names,
            format=cast("Format", format),
            pii_mode=cast("PiiMode", pii),
            since=since_at,
            until=until_at,
            user=user,
            reason=reason,
            show_progress=sys.stderr.isatty(),
        )

    summary(run(go, settings))
