"""`gatehouse db ...`: Alembic migrations against DATABASE_URL, storage statistics and maintenance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import typer

from gatehouse.cli.common import load_settings, plain_errors
from gatehouse.db.migrate import alembic_config

app = typer.Typer(no_args_is_help=True, help="Database migrations (Alembic), storage statistics and maintenance.")


def _alembic(name: str, *args: Any, **kwargs: Any) -> None:
    """Run an Alembic command on DATABASE_URL; a failure (unreachable database, unknown revision) is one line."""
    from alembic import command  # imported here: `gatehouse serve` (which loads this module) rarely needs it

    settings = load_settings()
    with plain_errors(settings):
        run: Callable[..., Any] = getattr(command, name)
        run(alembic_config(settings.database_url), *args, **kwargs)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision (default: head).")) -> None:
    """Apply migrations up to REVISION."""
    _alembic("upgrade", revision)
    typer.echo(f"upgraded to {revision}")


# `-1` (one step back, as Alembic writes it) would otherwise be read as an unknown option.
@app.command(context_settings={"ignore_unknown_options": True})
def downgrade(
    revision: str = typer.Argument(..., help="Target: a revision id, -1 for one step, base for empty."),
) -> None:
    """Revert migrations down to REVISION (data in dropped tables is lost: back up first)."""
    _alembic("downgrade", revision)
    typer.echo(f"downgraded to {revision}")


@app.command()
def current(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Show the revision the database is at."""
    _alembic("current", verbose=verbose)


@app.command()
def history(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """List all migrations."""
    _alembic("history", verbose=verbose)


@app.command()
def heads(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Show the newest revision(s) the code provides."""
    _alembic("heads", verbose=verbose)


@app.command()
def stamp(revision: str = typer.Argument(..., help="Revision to record, without running migrations.")) -> None:
    """Record REVISION as current without running anything (repair after a manual change)."""
    _alembic("stamp", revision)
    typer.echo(f"stamped {revision}")


def _size(value: int | None) -> str:
    """Bytes for people: 1.5 GB, 320 MB, 12 KB."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


@app.command()
def stats(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    tables: int = typer.Option(10, "--tables", min=0, max=200, help="How many of the largest tables to list."),
) -> None:
    """Storage: the database (files, WAL, pages, largest tables), BACKUP_DIR, the log files and free disk."""
    from rich.table import Table

    from gatehouse.cli.common import console, quiet_settings, run
    from gatehouse.db.engine import create_engine
    from gatehouse.monitoring.storage import StorageReport, collect

    settings = quiet_settings()

    async def go() -> StorageReport:
        engine = create_engine(settings)
        try:
            return await collect(engine, settings, largest=tables)
        finally:
            await engine.dispose()

    report = run(go, settings)
    if as_json:
        typer.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    database = report.database
    console.print(f"[bold]database[/bold] ({database.kind}): {_size(database.size_bytes)}", highlight=False)
    if database.kind == "sqlite":
        console.print(
            f"  file {database.file or 'in memory'}: {_size(database.file_bytes)}, WAL {_size(database.wal_bytes)}, "
            f"shared memory {_size(database.shm_bytes)}; {database.page_count} pages of {database.page_size} bytes, "
            f"{database.freelist_pages} free (a VACUUM gives those back)",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(f"  dead rows waiting for VACUUM: {database.dead_rows}", highlight=False)
    if database.tables:
        listing = Table("table", "size", "indexes", "rows" if database.kind == "sqlite" else "rows (estimate)")
        if database.kind == "postgresql":
            listing.add_column("dead rows")
        for table in database.tables:
            cells = [table.name, _size(table.total_bytes), _size(table.index_bytes), str(table.rows)]
            listing.add_row(*cells, *([str(table.dead_rows)] if database.kind == "postgresql" else []))
        console.print(listing)
    backups, logs = report.backups, report.logs
    console.print(
        f"[bold]backups[/bold] {backups.path}: {backups.backups} backups, "
        f"{backups.files} files, {_size(backups.bytes)}",
        highlight=False,
    )
    console.print(
        f"[bold]logs[/bold] {logs.path}: {logs.files} files, {_size(logs.bytes)}"
        if logs.path
        else "[bold]logs[/bold]: LOG_FILE is not set (stderr only)",
        highlight=False,
    )
    disks = Table("disk of", "directory", "free", "total", "free %", "status")
    for found in report.disks:
        status = "ok" if found.status == "ok" else f"[yellow]warn[/yellow]: {found.reason}"
        disks.add_row(
            found.label,
            found.path,
            _size(found.free_bytes),
            _size(found.total_bytes),
            f"{found.free_percent:.1f}",
            status,
        )
    console.print(disks)


@app.command()
def maintain(
    vacuum: bool = typer.Option(
        False, "--vacuum", help="SQLite: also VACUUM (rewrites the file; refused without its size free)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Maintain the database now: SQLite ANALYZE, PRAGMA optimize, (VACUUM), WAL checkpoint; PostgreSQL VACUUM
    (ANALYZE) of Gatehouse's tables. Safe while Gatehouse serves (a VACUUM holds the write lock while it runs)."""
    from gatehouse.cli.common import console, quiet_settings, run
    from gatehouse.monitoring.maintain import MaintainReport
    from gatehouse.monitoring.maintain import maintain as run_maintenance

    settings = quiet_settings()

    async def go() -> MaintainReport:
        return await run_maintenance(settings, vacuum=vacuum)

    report = run(go, settings)
    if as_json:
        typer.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    for step in report.steps:
        console.print(f"  {step}", highlight=False)
    line = f"database {_size(report.size_before)} -> {_size(report.size_after)}"
    if report.wal_before is not None:
        line += f", WAL {_size(report.wal_before)} -> {_size(report.wal_after)}"
        line += f", free pages {report.freelist_before} -> {report.freelist_after}"
    if report.dead_rows_before is not None:
        line += f", dead rows {report.dead_rows_before} -> {report.dead_rows_after}"
    console.print(f"{line}; {report.seconds:.2f} s", highlight=False)
