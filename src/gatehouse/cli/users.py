"""`gatehouse users ...`: manage accounts from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer

from gatehouse.accounts.keys import service as keys
from gatehouse.accounts.users import service as users
from gatehouse.auth.roles import Role
from gatehouse.cli import export
from gatehouse.cli.common import (
    CLI_ACTOR,
    console,
    db_session,
    err_console,
    load_settings,
    quiet_settings,
    run,
    session_and_bus,
)
from gatehouse.db.base import utcnow
from gatehouse.exports import erasure
from gatehouse.exports.entities import ENTITY_NAMES, PiiMode

app = typer.Typer(no_args_is_help=True, help="Users: create accounts, and delete them on request.")


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
            user = await users.create(
                session,
                actor=CLI_ACTOR,
                actor_role=None,
                email=email,
                role=role,
                password=password,
                display_name=name,
                messages_per_day=settings.default_messages_per_day,
                tokens_per_day=settings.default_tokens_per_day,
            )
            raw = None
            if with_key:
                _, raw = await keys.create(session, actor=CLI_ACTOR, user_id=user.id, name="cli")
            return user.id, raw

    user_id, raw = run(go, settings)
    console.print(f"created user {user_id} <{users.normalise_email(email)}> with role {role.value}")
    if raw:
        console.print(f"API key (shown once): {raw}", soft_wrap=True)


@app.command()
def delete(
    email: str = typer.Argument(..., help="The user's email."),
    export_first: bool = typer.Option(
        False, "--export-first", help="Export all of the user's data first; nothing is deleted if that fails."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where --export-first writes (default ./gatehouse-user-<id>-<time>.zip)."
    ),
    pii: str = typer.Option("masked", "--pii", help="The export's PII: masked (default) or raw (needs --reason)."),
    anonymise: bool = typer.Option(
        False, "--anonymise", help="Keep usage and request rows, anonymised, instead of deleting them."
    ),
    reason: str | None = typer.Option(None, help="Why (e.g. a ticket number): kept in the audit log."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Delete a user and their data (keys, sessions, usage, request log), or --anonymise them; audited.

    Their keys stop working at once on every server that shares REDIS_URL.

    Audit events about them keep their email until the retention purge (the log is never edited).
    """
    settings = quiet_settings()
    if pii not in ("masked", "raw"):
        err_console.print("[red]--pii must be masked or raw.[/red]")
        raise typer.Exit(2)
    if pii == "raw" and export_first and not reason:
        err_console.print("[red]--pii raw needs --reason (e.g. a ticket number): it is kept in the audit log.[/red]")
        raise typer.Exit(2)
    address = users.normalise_email(email)

    async def find() -> tuple[int, str]:
        async with db_session(settings) as session:
            user = await users.get_by_email_or_raise(session, email=address, hint="check the address")
            return user.id, user.role

    user_id, role = run(find, settings)
    mode: erasure.Mode = "anonymise" if anonymise else "delete"
    what = (
        "anonymise (usage and requests kept without PII; account disabled, keys revoked, stored responses deleted)"
        if anonymise
        else "delete (account, keys, sessions, usage, request log and stored responses)"
    )
    if not yes and not typer.confirm(f"{what.capitalize()}: user {user_id} <{address}> ({role})?"):
        raise typer.Exit(1)

    async def go() -> tuple[erasure.Erasure, export.Written | None]:
        written = None
        if export_first:
            stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
            written = await export.write_export(
                settings,
                out=out or export.default_path(stamp, stem=f"gatehouse-user-{user_id}"),
                entities=list(ENTITY_NAMES),
                pii_mode=cast("PiiMode", pii),
                user=user_id,
                reason=reason or f"deletion request for user {user_id}",
            )
        exported = None
        if written is not None:
            exported = {
                "export_id": written.spec.export_id,
                "sha256": written.result.zip_sha256,
                "bytes": written.result.zip_bytes,
                "rows": written.result.rows,
            }
        async with session_and_bus(settings) as (session, bus):
            done = await erasure.erase_user(
                session,
                bus=bus,
                actor=CLI_ACTOR,
                actor_role=None,
                user_id=user_id,
                mode=mode,
                reason=reason,
                export=exported,
            )
        return done, written

    done, written = run(go, settings)
    if written is not None:
        export.summary(written)
    verb = "anonymised" if anonymise else "deleted"
    console.print(
        f"{verb} user {user_id}: {done.keys} key(s), {done.sessions} session(s), {done.invites} invite(s), "
        f"{done.stored_responses} stored response(s)"
        + ("" if anonymise else f", {done.usage_days} usage day(s), {done.requests:,} request-log row(s)"),
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"the audit log keeps {done.audit_events_kept} event(s) about this user (where they acted, that target them, "
        "their keys or invites, or labelled with their email), as recorded, their email among it, until the "
        "retention purge removes them (it is hash-chained and never edited)",
        highlight=False,
        soft_wrap=True,
    )
    if not settings.redis_url:
        console.print(
            "without REDIS_URL, a running server may accept their keys for up to AUTH_CACHE_SECONDS "
            f"({settings.auth_cache_seconds:g} s) from its cache; restart it to refuse them at once",
            soft_wrap=True,
        )
