"""`gatehouse users ...`: manage accounts from the shell."""

from __future__ import annotations

import typer

from gatehouse.accounts import service
from gatehouse.accounts.roles import Role
from gatehouse.cli.common import console, db_session, load_settings, run

app = typer.Typer(no_args_is_help=True, help="Users: create and inspect accounts.")


@app.command()
def create(
    email: str = typer.Option(..., help="The user's email (unique, case-insensitive)."),
    role: Role = typer.Option(Role.USER, help="user, monitor, admin or superadmin."),
    password: str | None = typer.Option(None, help="Console password (8+ characters); omit for API-key-only."),
    name: str = typer.Option("", help="Display name (default: the email's local part)."),
    with_key: bool = typer.Option(False, "--with-key", help="Also create an API key and print it once."),
) -> None:
    """Create a user (and optionally an API key for them)."""
    settings = load_settings()

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
                _, raw = await service.create_api_key(session, user_id=user.id, name="cli")
            return user.id, raw

    user_id, raw = run(go)
    console.print(f"created user {user_id} <{service.normalise_email(email)}> with role {role.value}")
    if raw:
        console.print(f"API key (shown once): {raw}", soft_wrap=True)
