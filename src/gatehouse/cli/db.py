"""`gatehouse db ...`: Alembic migrations against DATABASE_URL."""

from __future__ import annotations

import typer
from alembic import command

from gatehouse.cli.common import load_settings
from gatehouse.db.migrate import alembic_config

app = typer.Typer(no_args_is_help=True, help="Database migrations (Alembic) for DATABASE_URL.")


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision (default: head).")) -> None:
    """Apply migrations up to REVISION."""
    command.upgrade(alembic_config(load_settings().database_url), revision)
    typer.echo(f"upgraded to {revision}")


@app.command()
def downgrade(
    revision: str = typer.Argument(..., help="Target: a revision id, -1 for one step, base for empty."),
) -> None:
    """Revert migrations down to REVISION (data in dropped tables is lost: back up first)."""
    command.downgrade(alembic_config(load_settings().database_url), revision)
    typer.echo(f"downgraded to {revision}")


@app.command()
def current(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Show the revision the database is at."""
    command.current(alembic_config(load_settings().database_url), verbose=verbose)


@app.command()
def history(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """List all migrations."""
    command.history(alembic_config(load_settings().database_url), verbose=verbose)


@app.command()
def heads(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Show the newest revision(s) the code provides."""
    command.heads(alembic_config(load_settings().database_url), verbose=verbose)


@app.command()
def stamp(revision: str = typer.Argument(..., help="Revision to record, without running migrations.")) -> None:
    """Record REVISION as current without running anything (repair after a manual change)."""
    command.stamp(alembic_config(load_settings().database_url), revision)
    typer.echo(f"stamped {revision}")
