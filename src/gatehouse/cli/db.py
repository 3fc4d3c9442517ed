"""`gatehouse db ...`: Alembic migrations against DATABASE_URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from gatehouse.cli.common import load_settings, plain_errors
from gatehouse.db.migrate import alembic_config

app = typer.Typer(no_args_is_help=True, help="Database migrations (Alembic) for DATABASE_URL.")


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


@app.command()
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
