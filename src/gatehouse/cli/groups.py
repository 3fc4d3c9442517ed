"""`gatehouse groups ...`: groups of users (teams, projects, cohorts) and their members, from the shell."""

from __future__ import annotations

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.accounts.groups import service as groups
from gatehouse.accounts.users import service as users
from gatehouse.auth.models import User
from gatehouse.cli.common import CLI_ACTOR, console, db_session, load_settings, run, session_and_bus
from gatehouse.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Groups: create, rename, delete them; add and remove members.")
USER_HELP = "The user: their id or their email."


async def _user(session: AsyncSession, who: str) -> User:
    """A user by id (digits) or email, or 404."""
    if who.strip().isdigit():
        return await users.get_or_raise(session, user_id=int(who))
    return await users.get_by_email_or_raise(session, email=who)


def _told(settings: Settings) -> None:
    """Say when running servers see a change of groups (the bus reaches them only through Redis)."""
    if not settings.redis_url:
        console.print(
            "without REDIS_URL, running servers are not told: their cached keys keep the old groups for up to "
            f"AUTH_CACHE_SECONDS ({settings.auth_cache_seconds:g} s); restart them to apply the change at once",
            soft_wrap=True,
        )


@app.command("list")
def list_groups(q: str | None = typer.Option(None, "--q", help="Only groups whose name holds this.")) -> None:
    """List groups by name, with their member and bound-key counts."""
    settings = load_settings()

    async def go() -> list[groups.GroupCounts]:
        async with db_session(settings) as session:
            return await groups.list_groups(session, search=q)

    rows = run(go, settings)
    if not rows:
        console.print("no groups: `gatehouse groups create NAME` makes one", highlight=False)
        return
    table = Table("id", "name", "members", "keys", "description", box=box.SIMPLE_HEAD)
    for row in rows:
        group = row.group
        table.add_row(str(group.id), escape(group.name), str(row.members), str(row.keys), escape(group.description))
    console.print(table)


@app.command()
def show(group_id: int = typer.Argument(..., help="The group's id.")) -> None:
    """Show a group: its members and the keys bound to it."""
    settings = load_settings()

    async def go() -> tuple[str, str, list[tuple[int, str, str]], list[tuple[int, str, str, str]]]:
        async with db_session(settings) as session:
            group = await groups.get_or_raise(session, group_id=group_id)
            members = [(u.id, u.email, u.role) for _, u in await groups.members_of(session, group_id=group_id)]
            keys = [(k.id, k.prefix, k.name, u.email) for k, u in await groups.bound_keys(session, group_id=group_id)]
            return group.name, group.description, members, keys

    name, description, members, keys = run(go, settings)
    console.print(f"group {group_id}: {escape(name)}" + (f" ({escape(description)})" if description else ""))
    console.print(f"{len(members)} member(s)", highlight=False)
    for user_id, email, role in members:
        console.print(f"  {user_id}\t{email}\t{role}", highlight=False, soft_wrap=True)
    console.print(f"{len(keys)} key(s) bound to it", highlight=False)
    for key_id, prefix, key_name, owner in keys:
        console.print(f"  {key_id}\t{prefix}\t{escape(key_name)}\t{owner}", highlight=False, soft_wrap=True)


@app.command()
def create(
    name: str = typer.Argument(..., help="1-100 characters, unique whatever their case."),
    description: str = typer.Option("", "--description", help="What the group is for."),
) -> None:
    """Create a group."""
    settings = load_settings()

    async def go() -> tuple[int, str]:
        async with db_session(settings) as session:
            group = await groups.create(session, actor=CLI_ACTOR, name=name, description=description)
            return group.id, group.name

    group_id, created = run(go, settings)
    console.print(f"created group {group_id}: {escape(created)}", highlight=False)


@app.command()
def rename(
    group_id: int = typer.Argument(..., help="The group's id."),
    name: str = typer.Argument(..., help="Its new name."),
) -> None:
    """Rename a group."""
    settings = load_settings()

    async def go() -> str:
        async with db_session(settings) as session:
            return (await groups.update(session, actor=CLI_ACTOR, group_id=group_id, name=name)).name

    console.print(f"group {group_id} is now named {escape(run(go, settings))}", highlight=False)


@app.command()
def describe(
    group_id: int = typer.Argument(..., help="The group's id."),
    text: str = typer.Argument(..., help='Its new description ("" for none).'),
) -> None:
    """Change a group's description."""
    settings = load_settings()

    async def go() -> None:
        async with db_session(settings) as session:
            await groups.update(session, actor=CLI_ACTOR, group_id=group_id, description=text)

    run(go, settings)
    console.print(f"group {group_id}'s description changed", highlight=False)


@app.command()
def delete(group_id: int = typer.Argument(..., help="The group's id.")) -> None:
    """Delete a group with its memberships and access rules (refused while keys are bound to it)."""
    settings = load_settings()

    async def go() -> groups.Deleted:
        async with session_and_bus(settings) as (session, bus):
            return await groups.delete(session, bus=bus, actor=CLI_ACTOR, group_id=group_id)

    deleted = run(go, settings)
    console.print(
        f"deleted group {deleted.id} ({escape(deleted.name)}): {len(deleted.former_members)} member(s) left it, "
        "its access rules went with it",
        highlight=False,
        soft_wrap=True,
    )
    _told(settings)


@app.command("add-member")
def add_member(
    group_id: int = typer.Argument(..., help="The group's id."),
    user: str = typer.Argument(..., help=USER_HELP),
) -> None:
    """Add a user to a group (nothing happens if they belong to it already)."""
    settings = load_settings()

    async def go() -> tuple[str, bool]:
        async with session_and_bus(settings) as (session, bus):
            member = await _user(session, user)
            _, added = await groups.add_member(session, bus=bus, actor=CLI_ACTOR, group_id=group_id, user_id=member.id)
            return member.email, added

    email, added = run(go, settings)
    if added:
        console.print(f"added {email} to group {group_id}", highlight=False)
        _told(settings)
    else:
        console.print(f"{email} is a member of group {group_id} already", highlight=False)


@app.command("remove-member")
def remove_member(
    group_id: int = typer.Argument(..., help="The group's id."),
    user: str = typer.Argument(..., help=USER_HELP),
) -> None:
    """Remove a user from a group (refused while keys of theirs are bound to it)."""
    settings = load_settings()

    async def go() -> str:
        async with session_and_bus(settings) as (session, bus):
            member = await _user(session, user)
            await groups.remove_member(session, bus=bus, actor=CLI_ACTOR, group_id=group_id, user_id=member.id)
            return member.email

    console.print(f"removed {run(go, settings)} from group {group_id}", highlight=False)
    _told(settings)
