"""`gatehouse keys ...`: list API keys and rotate the bootstrap admin's key from the shell."""

from __future__ import annotations

from typing import cast

import typer

from gatehouse.accounts.bootstrap import BOOTSTRAP_KEY_NAME
from gatehouse.accounts.keys import service as keys
from gatehouse.accounts.users import service as users
from gatehouse.cli.common import CLI_ACTOR, console, db_session, load_settings, run, session_and_bus
from gatehouse.db.base import utcnow

app = typer.Typer(no_args_is_help=True, help="API keys: list them, rotate the bootstrap admin's key.")


@app.command("rotate-bootstrap")
def rotate_bootstrap(
    email: str | None = typer.Option(None, help="The bootstrap admin's email (default: BOOTSTRAP_ADMIN_EMAIL)."),
) -> None:
    """Issue a new key for the bootstrap admin, revoke its old bootstrap keys, and print the new key once."""
    settings = load_settings()
    address = users.normalise_email(email or settings.bootstrap_admin_email)

    async def go() -> tuple[str, list[str]]:
        async with session_and_bus(settings) as (session, bus):
            user = await users.get_by_email_or_raise(
                session, email=address, hint="check BOOTSTRAP_ADMIN_EMAIL or pass --email"
            )
            _, raw, old = await keys.rotate(session, bus=bus, actor=CLI_ACTOR, user_id=user.id, name=BOOTSTRAP_KEY_NAME)
            return raw, [k.prefix for k in old]

    raw, revoked = run(go, settings)
    console.print(f"new bootstrap key for {address} (shown once, store it now): {raw}", soft_wrap=True, highlight=False)
    if revoked:
        console.print(f"revoked {len(revoked)} old bootstrap key(s): {', '.join(revoked)}", highlight=False)
    else:
        console.print("no active bootstrap key to revoke", highlight=False)
    if settings.redis_url:
        console.print("running servers were told through Redis: they refuse the old key from the next request")
    else:
        console.print(
            "without REDIS_URL, running servers may accept the old key for up to AUTH_CACHE_SECONDS "
            f"({settings.auth_cache_seconds:g} s) from their cache; restart them to refuse it at once",
            soft_wrap=True,
        )
    console.print("remove BOOTSTRAP_ADMIN_API_KEY from the environment if it held the old key", soft_wrap=True)


@app.command("list")
def list_keys(
    user: str | None = typer.Option(None, "--user", help="Only this user's keys (their email)."),
    state: str | None = typer.Option(None, help="active, revoked or expired."),
    limit: int = typer.Option(100, min=1, help="At most this many, newest first."),
) -> None:
    """List API keys (prefixes only, never the keys), newest first."""
    settings = load_settings()
    if state not in (None, "active", "revoked", "expired"):
        console.print("[red]--state must be active, revoked or expired.[/red]")
        raise typer.Exit(2)

    async def go() -> list[tuple[int, str, str, str, str]]:
        async with db_session(settings) as session:
            user_id = None
            if user is not None:
                user_id = (await users.get_by_email_or_raise(session, email=user)).id
            wanted = cast("keys.KeyState | None", state)
            found = await keys.list_keys(session, user_id=user_id, state=wanted, limit=limit)
            emails: dict[int, str] = {}
            rows: list[tuple[int, str, str, str, str]] = []
            now = utcnow()
            for key in found:
                if key.user_id not in emails:
                    owner = await users.get(session, user_id=key.user_id)
                    emails[key.user_id] = owner.email if owner else "?"
                rows.append((key.id, key.prefix, key.name, emails[key.user_id], keys.state_of(key, now)))
            return rows

    for key_id, prefix, name, owner, status in run(go, settings):
        console.print(f"{key_id}\t{prefix}\t{name}\t{owner}\t{status}", highlight=False, soft_wrap=True)
