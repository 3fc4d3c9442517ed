"""`gatehouse backup ...`: create, list, verify and restore backups (ops/backup.py)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Backups: create, list, verify and restore.")
