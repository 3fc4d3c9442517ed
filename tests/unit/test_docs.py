"""The docs stay true: every setting, command and route is documented, and documented commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from gatehouse.cli import app as cli_app
from gatehouse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
README = (ROOT / "README.md").read_text()
RUNBOOK = (ROOT / "RUNBOOK.md").read_text()
# The seed runbooks' procedures mapped to Gatehouse commands (the closing evidence of issue 18).
RUNBOOK_SEEDS = (ROOT / "docs" / "runbook-seeds.md").read_text()
# Settings read by the CLI rather than the Settings class.
EXTRA_ENV = {"FORWARDED_ALLOW_IPS"}


def test_every_setting_is_in_env_example() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, flags=re.M))
    expected = {name.upper() for name in Settings.model_fields} | EXTRA_ENV
    assert expected - documented == set(), "add these to .env.example"
    assert documented - expected == set(), "these in .env.example are not settings"


def _command_paths() -> set[tuple[str, ...]]:
    root = typer.main.get_command(cli_app)
    paths: set[tuple[str, ...]] = set()

    def walk(command: object, prefix: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*prefix, name))
        else:
            paths.add(prefix)

    walk(root, ())
    return paths


def test_documented_commands_exist() -> None:
    commands = _command_paths()
    groups = {p[0] for p in commands if len(p) > 1}
    for doc in (README, RUNBOOK, RUNBOOK_SEEDS):
        # Commands as written in code: after a backtick or at the start of a line of a code block.
        pattern = r"(?:`|^\s*)(?:uv run )?gatehouse ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?"
        for match in re.finditer(pattern, doc, flags=re.M):
            first, second = match.group(1), match.group(2)
            if first in groups:
                assert (first, second) in commands, f"documented `gatehouse {first} {second}` does not exist"
            else:
                assert (first,) in commands, f"documented `gatehouse {first}` does not exist"


def test_every_command_is_in_the_runbook_or_readme() -> None:
    for path in _command_paths():
        assert f"gatehouse {' '.join(path)}" in README + RUNBOOK, f"document `gatehouse {' '.join(path)}`"


def test_every_route_is_in_the_readme() -> None:
    from gatehouse.app import create_app
    from tests.conftest import make_settings
    from tests.integration.test_permissions import endpoints

    app = create_app(make_settings("sqlite+aiosqlite:///:memory:", ROOT / "data"))
    documented = {re.sub(r"\{[^}]+\}", "{}", p) for p in re.findall(r"(/[a-z0-9_/{}.:-]+)", README)}
    # The console's pages (and `/`, its sign-in) are documented in README's "The console", page by page there.
    served = {
        re.sub(r"\{[^}]+\}", "{}", endpoint.path)
        for endpoint in endpoints(app)
        if endpoint.path != "/" and not endpoint.path.startswith("/console")
    }
    assert len(served) > 50, "the route walk found too few routes: has FastAPI changed how routers are included?"
    undocumented = sorted(path for path in served if path not in documented)
    assert undocumented == [], "document these routes in README.md's API overview"


def _import_every_module() -> None:
    """Import all of gatehouse, so that every error class and audit event is defined."""
    import importlib
    import pkgutil

    import gatehouse

    for module in pkgutil.walk_packages(gatehouse.__path__, "gatehouse."):
        if ".migrations" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found)) if found else found


def test_every_error_code_is_documented() -> None:
    from gatehouse.errors import GatehouseError

    _import_every_module()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "docs" / "errors.md").read_text(), flags=re.M))
    codes = {cls.code for cls in {GatehouseError, *_subclasses(GatehouseError)}}
    assert codes - documented == set(), "document these error codes in docs/errors.md"
    assert documented - codes == set(), "these codes in docs/errors.md are raised nowhere"


def test_every_audit_action_is_documented() -> None:
    from gatehouse.audit.events import EVENTS, LEGACY_ACTIONS

    _import_every_module()
    documented = set(re.findall(r"`([a-z_]+\.[a-z_]+|signup|logout)`", (ROOT / "docs" / "audit.md").read_text()))
    actions = set(EVENTS) | set(LEGACY_ACTIONS)
    assert actions - documented == set(), "document these audit actions in docs/audit.md"
