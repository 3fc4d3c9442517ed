"""`gatehouse secret generate`: a strong random secret for a setting (RUNBOOK "Rotating secrets")."""

from __future__ import annotations

import typer

from gatehouse.configuration.generate import SecretKind
from gatehouse.configuration.generate import generate as generate_secret

app = typer.Typer(no_args_is_help=True, help="Secrets for the settings that hold them.")


@app.command("generate")
def generate(
    kind: SecretKind = typer.Option(
        SecretKind.TOKEN,
        "--kind",
        help="jwt: JWT_SECRET (64 characters); token: JOB_TOKEN, METRICS_TOKEN, ALERT_WEBHOOK_SECRET (43); "
        "api-key: BOOTSTRAP_ADMIN_API_KEY (gh_...); backup-key: BACKUP_KEY (64).",
    ),
) -> None:
    """Print a new random secret of the right form and length for the setting it is meant for."""
    print(generate_secret(kind))
