"""`gatehouse backup ...`: create, list, verify, decrypt and restore backups (backups/)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from gatehouse.backups.create import create_backup
from gatehouse.backups.manifest import Damaged, get_backup, inventory
from gatehouse.backups.restore import in_use, restore_backup, serving_processes
from gatehouse.backups.snapshot import Progress as StepProgress
from gatehouse.backups.verify import decrypt_backup, verify_backup
from gatehouse.cli.common import console, err_console, plain_errors, quiet_settings, run
from gatehouse.errors import GatehouseError
from gatehouse.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Backups: create, list, verify and restore.")
T = TypeVar("T")


@contextmanager
def _progress(description: str) -> Iterator[StepProgress | None]:
    """A transient Rich progress bar on a terminal (nothing otherwise): a callback for the backup steps."""
    if not err_console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _with_progress(description: str, settings: Settings, work: Callable[[StepProgress | None], Awaitable[T]]) -> T:
    with _progress(description) as progress:
        return run(lambda: work(progress), settings)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _where(settings: Settings) -> str:
    """The database, for a person: its file or host and name, never its password."""
    url = make_url(settings.database_url)
    if settings.is_sqlite:
        return f"SQLite {url.database}"
    return f"PostgreSQL {url.host}:{url.port or 5432}/{url.database}"


@app.command()
def create(
    encrypt: bool = typer.Option(False, "--encrypt", help="Encrypt with BACKUP_KEY (AES-256-GCM)."),
) -> None:
    """Back up the database into BACKUP_DIR (safe while Gatehouse serves); keeps the newest BACKUP_KEEP."""
    settings = quiet_settings()
    manifest = _with_progress(
        "Backing up", settings, lambda progress: create_backup(settings, encrypt=encrypt, progress=progress)
    )
    locked = ", encrypted" if manifest.encrypted else ""
    console.print(
        f"Created backup {manifest.name}: {_size(manifest.size)}{locked}, {manifest.total_rows} rows in "
        f"{len(manifest.rows)} tables, revision {', '.join(manifest.revision) or 'none'}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"File: {settings.backup_dir / manifest.file}", highlight=False, soft_wrap=True)


@app.command("list")
def list_() -> None:
    """List the backups in BACKUP_DIR, newest first; a damaged one is marked, with what is wrong."""
    settings = quiet_settings()
    found = run(lambda: inventory(settings), settings)
    backups = found.newest_first()
    if not backups:
        console.print(f"No backups in {settings.backup_dir}: `gatehouse backup create` makes one", highlight=False)
        return
    table = Table(title=f"Backups in {settings.backup_dir}", title_justify="left", box=box.SIMPLE_HEAD)
    columns = ("name", "created (UTC)", "kind", "database", "size", "encrypted", "revision", "rows", "state")
    for column in columns:
        table.add_column(column, justify="right" if column in ("size", "rows") else "left", no_wrap=True)
    for b in backups:
        created = f"{b.created_at:%Y-%m-%d %H:%M}"
        if isinstance(b, Damaged):
            table.add_row(b.name, created, b.kind, "-", "-", "-", "-", "-", "DAMAGED")
            continue
        encrypted = "yes" if b.encrypted else "no"
        revision = ", ".join(b.revision) or "-"
        table.add_row(b.name, created, b.kind, b.database, _size(b.size), encrypted, revision, str(b.total_rows), "ok")
    # Every row on one line, however narrow the terminal (or a pipe): names are copied from here.
    width = max(console.width, Measurement.get(console, console.options.update_width(10_000), table).maximum)
    Console(width=width, force_terminal=console.is_terminal, no_color=console.no_color).print(table, highlight=False)
    if found.damaged:
        console.print(
            f"{len(found.damaged)} damaged (not usable as they are, kept until you move them away; RUNBOOK, "
            "Backups and restore):",
            highlight=False,
            soft_wrap=True,
        )
        for d in found.damaged:
            line = f"  {d.name}: {d.problem} (files: {', '.join(d.files)})"
            console.print(escape(line), highlight=False, soft_wrap=True)


@app.command()
def verify(
    name: str | None = typer.Argument(None, help="The backup to check (default: the newest)."),
) -> None:
    """Restore a backup into a scratch database and check it: integrity, revision, row counts. Exit 1 if not OK
    (a damaged backup, e.g. one whose manifest cannot be read, is not OK)."""
    settings = quiet_settings()
    others: tuple[Damaged, ...] = ()
    if name is None:
        found = run(lambda: inventory(settings), settings)
        backups = found.newest_first()
        if not backups:
            err_console.print(f"[red]Error:[/red] no backups in {settings.backup_dir}", highlight=False)
            raise typer.Exit(1)
        name = backups[0].name
        others = tuple(d for d in found.damaged if d.name != name)
    chosen = name
    result = _with_progress("Verifying", settings, lambda progress: verify_backup(settings, chosen, progress=progress))
    if result.ok:
        console.print(
            f"OK: {result.name} restores, {result.rows} rows in {result.tables} tables match its manifest",
            highlight=False,
        )
    else:
        err_console.print(f"[red]FAILED:[/red] {result.name}", highlight=False)
        for problem in result.problems:
            err_console.print(f"  - {escape(problem)}", highlight=False, soft_wrap=True)
    if others:
        err_console.print(
            f"[yellow]Also damaged:[/yellow] {', '.join(d.name for d in others)} (`gatehouse backup list` says "
            "what is wrong)",
            highlight=False,
            soft_wrap=True,
        )
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def decrypt(
    name: str = typer.Argument(..., help="The encrypted backup (`gatehouse backup list`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the plain file (a new file)."),
) -> None:
    """Write an encrypted backup's plain database file, checked against its manifest (for a manual restore)."""
    settings = quiet_settings()
    manifest = _with_progress(
        "Decrypting", settings, lambda progress: decrypt_backup(settings, name, output, progress=progress)
    )
    console.print(
        f"Wrote {output} ({_size(manifest.plaintext_size)}, SHA-256 {manifest.plaintext_sha256}): "
        "the plain data, as readable as the database: delete it when done",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def restore(
    name: str = typer.Argument(..., help="The backup to restore (`gatehouse backup list`)."),
    force: bool = typer.Option(False, "--force", help="Restore even while Gatehouse serves this database."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Replace the database with a backup: a safety backup first, then restore, migrate to head, and check."""
    settings = quiet_settings()
    manifest = run(lambda: get_backup(settings, name), settings)
    serving = run(lambda: serving_processes(settings), settings)
    if serving and not force:
        with plain_errors(settings, (GatehouseError,)):
            raise in_use(serving)
    if not yes:
        typer.confirm(
            f"Replace all data in {_where(settings)} with backup {manifest.name} "
            f"(taken {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC, {manifest.total_rows} rows)? "
            "A safety backup of the current data is taken first",
            abort=True,
        )
    result = _with_progress(
        "Restoring", settings, lambda progress: restore_backup(settings, name, force=force, progress=progress)
    )
    if result.serving:
        err_console.print(
            f"[yellow]Restored while serving:[/yellow] restart {'; '.join(result.serving)} so it drops its caches",
            highlight=False,
            soft_wrap=True,
        )
    if result.safety_backup:
        console.print(
            f"Safety backup of the data replaced: {result.safety_backup} (to go back: "
            f"`gatehouse backup restore {result.safety_backup}`)",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"Restored {result.name}: {result.rows} rows, migrated to {', '.join(result.revision)}", highlight=False
    )
    if not result.ok:
        err_console.print("[red]The check after the restore found problems:[/red]", highlight=False)
        for problem in result.problems:
            err_console.print(f"  - {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
