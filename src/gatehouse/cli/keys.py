"""`gatehouse keys ...`: list API keys, change their settings, and rotate the bootstrap admin's key from the
shell."""

from __future__ import annotations

from typing import Any, cast

import typer
from pydantic import ValidationError
from rich.markup import escape

from gatehouse.accounts.bootstrap import BOOTSTRAP_KEY_NAME
from gatehouse.accounts.keys import service as keys
from gatehouse.accounts.keys.schemas import SURFACES, KeySettingsUpdate
from gatehouse.accounts.users import service as users
from gatehouse.cli.common import CLI_ACTOR, console, db_session, err_console, load_settings, run, session_and_bus
from gatehouse.db.base import utcnow

app = typer.Typer(
    no_args_is_help=True, help="API keys: list them, change their settings, rotate the bootstrap admin's key."
)


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


# Each setting's option, to name it in an error.
OPTION_OF = {
    "group_id": "--group",
    "acts_for_users": "--acts-for-users",
    "allowed_models": "--models",
    "allowed_surfaces": "--surfaces",
    "allowed_networks": "--networks",
    "rate_per_minute": "--rate",
}


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _changes(given: dict[str, tuple[object, bool]]) -> dict[str, Any]:
    """The settings to change from (value, clear) pairs of options: a value sets, a clear flag lifts (null)."""
    changes: dict[str, Any] = {}
    for name, (value, clear) in given.items():
        option = OPTION_OF[name]
        if value is not None and clear:
            clearing = "--no-group" if name == "group_id" else f"--clear-{option.removeprefix('--')}"
            err_console.print(f"[red]Use {option} or {clearing}, not both.[/red]")
            raise typer.Exit(2)
        if clear:
            changes[name] = None
        elif value is not None:
            changes[name] = _items(value) if isinstance(value, str) else value
    if not changes:
        err_console.print("[red]Nothing to change: give at least one option (see --help).[/red]")
        raise typer.Exit(2)
    try:
        return KeySettingsUpdate.model_validate(changes).settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = OPTION_OF.get(str(error["loc"][0]), "") if error["loc"] else ""
            err_console.print(
                f"[red]{where or 'Invalid'}:[/red] {escape(error['msg'])}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(2) from exc


def _shown(values: list[str] | None, unrestricted: str) -> str:
    return unrestricted if values is None else ", ".join(values)


@app.command("set")
def set_settings(
    key_id: int = typer.Argument(..., help="The key's id (`gatehouse keys list` shows it)."),
    group: int | None = typer.Option(None, "--group", min=1, help="Bind the key to this group (its owner's)."),
    no_group: bool = typer.Option(False, "--no-group", help="Unbind the key from its group."),
    models: str | None = typer.Option(
        None, "--models", help="Model patterns it may use, comma-separated (`*`: any characters), e.g. 'llama3*,bge-*'."
    ),
    clear_models: bool = typer.Option(False, "--clear-models", help="Lift its model list."),
    surfaces: str | None = typer.Option(
        None, "--surfaces", help=f"Surfaces it may use, comma-separated: {', '.join(SURFACES)}."
    ),
    clear_surfaces: bool = typer.Option(False, "--clear-surfaces", help="Allow every surface again."),
    networks: str | None = typer.Option(
        None, "--networks", help="Client networks it may be used from, comma-separated CIDRs or addresses."
    ),
    clear_networks: bool = typer.Option(False, "--clear-networks", help="Allow it from anywhere again."),
    rate: int | None = typer.Option(None, "--rate", min=1, help="Its own limit of requests per minute."),
    clear_rate: bool = typer.Option(False, "--clear-rate", help="Lift its own rate limit."),
    acts_for_users: bool | None = typer.Option(
        None,
        "--acts-for-users/--no-acts-for-users",
        help="A front-end's key, whose requests name the person they are for.",
        show_default=False,
    ),
) -> None:
    """Change a key's group and restrictions (audited; running servers that share REDIS_URL apply it at once)."""
    changes = _changes(
        {
            "group_id": (group, no_group),
            "acts_for_users": (acts_for_users, False),
            "allowed_models": (models, clear_models),
            "allowed_surfaces": (surfaces, clear_surfaces),
            "allowed_networks": (networks, clear_networks),
            "rate_per_minute": (rate, clear_rate),
        }
    )
    settings = load_settings()

    async def go() -> tuple[str, dict[str, Any]]:
        async with session_and_bus(settings) as (session, bus):
            key = await keys.change_settings_as_admin(
                session, bus=bus, actor=CLI_ACTOR, actor_role=None, key_id=key_id, changes=changes
            )
            owner = await users.get_or_raise(session, user_id=key.user_id)
            return f"key {key.id} ({key.prefix}..., {key.name!r} of {owner.email})", keys.settings_of(key)

    label, now = run(go, settings)
    console.print(escape(label), highlight=False, soft_wrap=True)
    lines = {
        "group": "none" if now["group_id"] is None else str(now["group_id"]),
        "acts for users": "yes" if now["acts_for_users"] else "no",
        "models": _shown(now["allowed_models"], "any the owner may use"),
        "surfaces": _shown(now["allowed_surfaces"], "all"),
        "networks": _shown(now["allowed_networks"], "anywhere"),
        "rate per minute": "no limit of its own" if now["rate_per_minute"] is None else str(now["rate_per_minute"]),
    }
    for name, value in lines.items():
        console.print(f"  {name}: {escape(value)}", highlight=False, soft_wrap=True)
    if not settings.redis_url:
        console.print(
            "without REDIS_URL, running servers may use the old settings for up to AUTH_CACHE_SECONDS "
            f"({settings.auth_cache_seconds:g} s) from their cache; restart them to apply them at once",
            soft_wrap=True,
        )
