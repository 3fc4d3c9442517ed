"""`gatehouse users ...`: manage accounts from the shell."""

from __future__ import annotations

from pathlib import Path

import typer

from gatehouse.accounts import service
from gatehouse.accounts.roles import Role
from gatehouse.audit.service import Actor
from gatehouse.cli.common import console, db_session, err_console, load_settings, run

app = typer.Typer(no_args_is_help=True, help="Users: create and inspect accounts.")


def _password(given: str | None, *, prompt: bool, path: Path | None) -> str | None:
    """The password from exactly one of --password, --password-prompt and --password-file (or none)."""
    if sum((given is not None, prompt, path is not None)) > 1:
        err_console.print("[red]Use only one of --password, --password-prompt and --password-file.[/red]")
        raise typer.Exit(2)
    if prompt:
        value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            err_console.print(f"[red]--password-file {path} cannot be read:[/red] {reason}", soft_wrap=True)
            raise typer.Exit(2) from exc
    return given


@app.command()
def create(
    email: str = typer.Option(..., help="The user's email (unique, case-insensitive)."),
    role: Role = typer.Option(Role.USER, help="user, monitor, admin or superadmin."),
    password: str | None = typer.Option(
        None,
        help="Console password (8+ characters); omit for API-key-only. Lands in shell history: "
        "prefer --password-prompt or --password-file.",
    ),
    password_prompt: bool = typer.Option(
        False, "--password-prompt", help="Ask for the console password (hidden, typed twice)."
    ),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="Read the console password from this file (a trailing newline is ignored)."
    ),
    name: str = typer.Option("", help="Display name (default: the email's local part)."),
    with_key: bool = typer.Option(False, "--with-key", help="Also create an API key and print it once."),
) -> None:
    """Create a user (and optionally an API key for them)."""
    settings = load_settings()
    password = _password(password, prompt=password_prompt, path=password_file)

    async def go() -> tuple[int, str | None]:
        async with db_session(settings) as session:
            user = await service.create_user(
                session,
                email=email,
                role=role,
                password=password,
                display_name=name,
                messages_per_day=settings.default_messages_per_day,
                tokens_per_day=settings.default_tokens_per_day,
            )
            raw = None
            if with_key:
                _, raw = await service.create_api_key(session, actor=Actor.system("cli"), user_id=user.id, name="cli")
            return user.id, raw

    user_id, raw = run(go, settings)
    console.print(f"created user {user_id} <{service.normalise_email(email)}> with role {role.value}")
    if raw:
        console.print(f"API key (shown once): {raw}", soft_wrap=True)
