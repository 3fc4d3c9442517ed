"""`gatehouse access ...`: model access rules from the shell: list, allow, deny, remove, check."""

from __future__ import annotations

from typing import Literal

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.access import service
from gatehouse.accounts.access.policy import AccessPolicy
from gatehouse.accounts.access.schemas import AccessCheck, RuleCreate
from gatehouse.accounts.users import service as users
from gatehouse.auth.models import Group
from gatehouse.cli.common import CLI_ACTOR, console, db_session, load_settings, run, session_and_bus
from gatehouse.errors import NotFound

app = typer.Typer(
    no_args_is_help=True,
    help="Model access: which users and groups may use which models and upstreams (rules by `*` pattern).",
)
USER_HELP = "The user the rule is for: an email or an id."
GROUP_HELP = "Or the group it is for: a name or an id."


async def _user_id(session: AsyncSession, user: str) -> int:
    if user.isdigit():
        return (await users.get_or_raise(session, user_id=int(user))).id
    return (await users.get_by_email_or_raise(session, email=user)).id


async def _group_id(session: AsyncSession, group: str) -> int:
    row = await session.get(Group, int(group)) if group.isdigit() else None
    if row is None:
        row = (await session.execute(select(Group).where(Group.name == group))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"No group {group!r}: list them with `gatehouse groups list`.")
    return row.id


def _subject(user: str | None, group: str | None) -> None:
    if (user is None) == (group is None):
        console.print("[red]Give exactly one of --user and --group: whom the rule is for.[/red]")
        raise typer.Exit(2)


def _add(effect: Literal["allow", "deny"], pattern: str, user: str | None, group: str | None, upstream: bool) -> None:
    _subject(user, group)
    settings = load_settings()

    async def go() -> tuple[int, bool]:
        async with session_and_bus(settings) as (session, bus):
            rule = RuleCreate(
                user_id=await _user_id(session, user) if user else None,
                group_id=await _group_id(session, group) if group else None,
                effect=effect,
                target="upstream" if upstream else "model",
                pattern=pattern,
            )
            row, added = await service.add_rule(session, bus=bus, actor=CLI_ACTOR, rule=rule)
            return row.id, added

    rule_id, added = run(go, settings)
    what = f"{'upstreams' if upstream else 'models'} matching {pattern!r}"
    verb = "added" if added else "exists already:"
    console.print(f"rule {rule_id} {verb} {effect} {what} for {user or 'group ' + str(group)}", highlight=False)


@app.command("allow")
def allow(
    pattern: str = typer.Argument(..., help="A model name (or alias) or pattern, e.g. 'llama3*'; or an upstream's."),
    user: str | None = typer.Option(None, "--user", help=USER_HELP),
    group: str | None = typer.Option(None, "--group", help=GROUP_HELP),
    upstream: bool = typer.Option(False, "--upstream", help="PATTERN names upstreams, not models."),
) -> None:
    """Allow a user or a group the models (or upstreams) matching PATTERN."""
    _add("allow", pattern, user, group, upstream)


@app.command("deny")
def deny(
    pattern: str = typer.Argument(..., help="A model name (or alias) or pattern, e.g. 'gpt-4*'; or an upstream's."),
    user: str | None = typer.Option(None, "--user", help=USER_HELP),
    group: str | None = typer.Option(None, "--group", help=GROUP_HELP),
    upstream: bool = typer.Option(False, "--upstream", help="PATTERN names upstreams, not models."),
) -> None:
    """Deny a user or a group the models (or upstreams) matching PATTERN."""
    _add("deny", pattern, user, group, upstream)


@app.command("remove")
def remove(rule_id: int = typer.Argument(..., min=1, help="The rule's id (see `gatehouse access list`).")) -> None:
    """Remove an access rule."""
    settings = load_settings()

    async def go() -> None:
        async with session_and_bus(settings) as (session, bus):
            await service.remove_rule(session, bus=bus, actor=CLI_ACTOR, rule_id=rule_id)

    run(go, settings)
    console.print(f"rule {rule_id} removed", highlight=False)


@app.command("list")
def list_rules(
    user: str | None = typer.Option(None, "--user", help="Only this user's rules (an email or an id)."),
    group: str | None = typer.Option(None, "--group", help="Only this group's rules (a name or an id)."),
) -> None:
    """The default policy (MODEL_ACCESS_DEFAULT), then one tab-separated line per rule: id, whose, effect, what
    it matches (model or upstream), pattern."""
    settings = load_settings()

    async def go() -> list[tuple[int, str, str, str, str]]:
        async with db_session(settings) as session:
            user_id = await _user_id(session, user) if user else None
            group_id = await _group_id(session, group) if group else None
            names = {g.id: g.name for g in (await session.execute(select(Group))).scalars()}
            rows = []
            for rule in await service.list_rules(session, user_id=user_id, group_id=group_id):
                if rule.user_id is not None:
                    owner = await users.get(session, user_id=rule.user_id)
                    whose = f"user {owner.email if owner else rule.user_id}"
                else:
                    whose = f"group {names.get(rule.group_id or 0, rule.group_id)}"
                rows.append((rule.id, whose, rule.effect, rule.target, rule.pattern))
            return rows

    rows = run(go, settings)
    # Plain tab-separated lines (Rich would expand the tabs): easy to read, and to cut or awk.
    typer.echo(f"default: {settings.model_access_default}")
    for rule_id, whose, effect, target, pattern in rows:
        typer.echo(f"{rule_id}\t{whose}\t{effect}\t{target}\t{pattern}")


@app.command("check")
def check(
    user: str = typer.Argument(..., help="The user: an email or an id."),
    model: str = typer.Argument(..., help="The model name as a client would ask for it."),
    key: int | None = typer.Option(None, "--key", min=1, help="Through this API key of theirs (its own limits)."),
    upstream: list[str] = typer.Option(
        [], "--upstream", help="Through this upstream (repeatable); default: model rules only."
    ),
) -> None:
    """Whether USER may use MODEL (through each upstream given), and which rule or default decided."""
    settings = load_settings()

    async def go() -> AccessCheck:
        async with db_session(settings) as session:
            policy = AccessPolicy(None, default=settings.model_access_default)
            policy.load(await service.list_rules(session))
            user_id = await _user_id(session, user)
            return await service.check(
                session, policy=policy, upstreams=upstream or [""], user_id=user_id, model=model, key_id=key
            )

    result = run(go, settings)
    for route in result.routes:
        via = f" through {route.upstream}" if route.upstream else ""
        why = route.decided_by + (f" rule {route.rule_id}" if route.rule_id else "")
        if route.group_id:
            why += f" (group {route.group_id})"
        verdict = "allowed" if route.allowed else "denied"
        console.print(f"{model}{via}: {verdict}, decided by {why}", highlight=False)
    raise typer.Exit(0 if result.allowed else 1)
