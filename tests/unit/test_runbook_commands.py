"""Every `gatehouse` command RUNBOOK.md shows works as written.

The commands are taken from the runbook's code blocks and inline code. Those that can run here run for real,
in-process, against one throwaway SQLite database (migrated and seeded with `gatehouse demo seed`), and must end
with exit 0 or a clear message, never a traceback. Those that need a live system (a server, Redis, a real backup
to restore) or hold placeholders (`NAME`, `<old>`, `$KEY`, `...`) are parsed by click instead, with their real
options, so an unknown option, a missing argument or a value of the wrong type fails the test all the same.
`scripts/local-ha.sh` commands are checked against the script's own subcommands and options.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import typer.main
from argon2 import PasswordHasher
from typer._click.core import Command as ClickCommand  # typer 0.29 carries its own click: these are its classes
from typer._click.exceptions import MissingParameter, UsageError
from typer.core import TyperGroup
from typer.testing import CliRunner

from gatehouse.auth import passwords
from gatehouse.cli import app as cli_app
from gatehouse.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = (ROOT / "RUNBOOK.md").read_text()
LOCAL_HA = (ROOT / "scripts" / "local-ha.sh").read_text()
ROOT_COMMAND = typer.main.get_command(cli_app)
PROGRAMS = {"gatehouse", "gatehouse-cli"}  # gatehouse-cli: deploy/systemd's wrapper, the same arguments
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ">", ">>", "<", "2>", "2>&1"}

# What may run here, by command path. Anything not listed needs a live system and is only parsed; the reason
# is kept beside it so that a reader sees why a command is not run.
RUNNABLE = {
    ("version",),
    ("export",),
    ("doctor",),
    ("logs",),
    ("support-bundle",),
    ("config", "show"),
    ("secret", "generate"),
    ("db", "current"),
    ("db", "heads"),
    ("db", "history"),
    ("db", "upgrade"),
    ("db", "stats"),
    ("db", "maintain"),
    ("users", "create"),
    ("users", "delete"),
    ("keys", "list"),
    ("keys", "set"),
    ("keys", "rotate-bootstrap"),
    ("groups", "create"),
    ("groups", "list"),
    ("groups", "show"),
    ("groups", "add-member"),
    ("groups", "remove-member"),
    ("groups", "rename"),
    ("groups", "describe"),
    ("groups", "delete"),
    ("access", "allow"),
    ("access", "deny"),
    ("access", "list"),
    ("access", "remove"),
    ("access", "check"),
    ("usage", "show"),
    ("usage", "reset"),
    ("usage", "report"),
    ("prices", "list"),
    ("prices", "set"),
    ("prices", "remove"),
    ("prices", "history"),
    ("budgets", "set"),
    ("budgets", "show"),
    ("audit", "tail"),
    ("audit", "verify"),
    ("backup", "create"),
    ("backup", "list"),
    ("backup", "verify"),
    ("jobs", "list"),
    ("jobs", "run"),
    ("alerts", "list"),
    ("alerts", "test"),
    ("log-level", "set"),
    ("log-level", "show"),
    ("log-level", "reset"),
    ("blocklist", "add"),
    ("blocklist", "list"),
    ("blocklist", "remove"),
    ("demo", "seed"),
}
PARSED_ONLY = {
    ("serve",): "listens until stopped",
    ("reload",): "signals running servers (through Redis or DATA_DIR/gatehouse.pid)",
    ("db", "downgrade"): "would take away the schema the other commands need",
    ("db", "stamp"): "would record a revision the database is not at",
    ("backup", "restore"): "replaces the database the other commands use",
    ("backup", "decrypt"): "needs an encrypted backup by name",
    ("demo", "reset"): "runs the whole seed again (seconds); the seed itself runs once here",
}
# Python's own errors: a command that ends with one of these (even as a plain `Error: ...` line) has a bug.
BUG_ERRORS = ("ValueError", "TypeError", "KeyError", "AttributeError", "AssertionError", "IndexError", "NameError")
# Options that need a live system whatever the command: such a command is parsed, not run.
LIVE_OPTIONS = {"--follow", "-f", "--smoke", "--url", "--password-prompt"}
# Placeholders the runbook writes for the reader to fill in, and a value of the right type to parse them with.
PLACEHOLDERS = {
    "ID": "1",
    "GROUP_ID": "1",
    "KEY_ID": "1",
    "RULE_ID": "1",
    "USER_ID": "1",
    "NAME": "gatehouse-20261122T030000Z",
    "SAFETY_NAME": "gatehouse-20261122T030000Z-safety",
    "REV": "base",
    "REVISION": "head",
    "EMAIL": "alice@example.com",
    "PATH": "/run/secrets/password",
    "MODEL": "gpt-4o",
    "TEXT": "ticket 4711",
    "REQUEST_ID": "3f9c2a",
    "YYYY-MM-DD": "2026-12-01",
    "N": "2",
    "X": "demo",
}


@dataclass(frozen=True)
class Command:
    """One command as the runbook writes it: the program's arguments, and whether it stands as written."""

    text: str
    args: tuple[str, ...]
    has_placeholders: bool
    has_environment: bool  # VAR=value before it: the runbook means other settings than these


def _code_fragments(markdown: str) -> Iterator[str]:
    """Each line of a fenced code block, and each inline code span outside them."""
    in_block = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            yield line
        else:
            yield from re.findall(r"`([^`]+)`", line)


def _tokens(fragment: str) -> list[str]:
    lexer = shlex.shlex(fragment, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote: a span cut by the markdown, not a command
        return []


def _is_placeholder(token: str) -> bool:
    word = token.split("=", 1)[-1]
    return (
        word in PLACEHOLDERS
        or "..." in word
        or "$" in word
        or word.startswith("[")
        or "YYYY" in word
        or bool(re.search(r"\b(NEW|OLD)\b", word))
    )


def _command_position(before: list[str]) -> bool:
    """Whether a word is where the shell takes a program: not `kubectl -n gatehouse` or `systemctl stop gatehouse`."""
    if not before or before[-1] in SEPARATORS | {"run", "--", "exec", "then", "do"}:
        return True
    if re.fullmatch(r"[A-Z_]+=.*", before[-1]):  # VAR=value gatehouse ...
        return True
    # `docker compose exec SERVICE gatehouse ...`, `sudo -u USER gatehouse-cli ...`
    return len(before) >= 2 and before[-2] in {"exec", "-u"}


def _commands(markdown: str, programs: set[str]) -> list[Command]:
    found: list[Command] = []
    for fragment in _code_fragments(markdown):
        # `<old>` and `<proxy address>` are placeholders: one word, so the shell's `<` does not split them.
        fragment = re.sub(r"<([a-z][a-z _-]*)>", lambda m: "PH_" + m.group(1).replace(" ", "_"), fragment)
        tokens = _tokens(fragment)
        for index, token in enumerate(tokens):
            if token not in programs or not _command_position(tokens[:index]):
                continue
            args: list[str] = []
            for arg in tokens[index + 1 :]:
                if arg in SEPARATORS or arg.startswith("#"):
                    break
                args.append(arg)
            # `docker compose exec gatehouse gatehouse db current`: the first is the service; `systemctl stop
            # gatehouse`, `journalctl -u gatehouse --since`: a unit. A command starts with a subcommand.
            if not args or not re.fullmatch(r"[a-z][a-z-]*", args[0]) or args[0] in programs:
                continue
            before = tokens[:index]
            environment = bool(before) and bool(re.fullmatch(r"[A-Z_]+=.*", before[-1]))
            placeholders = any(_is_placeholder(a) or a.startswith("PH_") for a in [*args, *before[-3:]])
            found.append(Command(fragment, tuple(args), placeholders, environment))
    return found


def _split(args: tuple[str, ...]) -> tuple[tuple[str, ...], ClickCommand, list[str]]:
    """The command path, its click command and the arguments left for it; an unknown command fails."""
    command: ClickCommand = ROOT_COMMAND
    path: list[str] = []
    rest = list(args)
    while isinstance(command, TyperGroup) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`gatehouse {' '.join([*path, name])}` is not a command (RUNBOOK: {args})"
        path.append(name)
        command = sub
    return tuple(path), command, rest


def _filled(args: list[str]) -> list[str]:
    """The arguments with placeholders replaced by values of their type, for click to parse."""
    filled = []
    for arg in args:
        if arg == "...":  # `gatehouse support-bundle ...`: the rest left to the reader
            continue
        if arg in PLACEHOLDERS:
            arg = PLACEHOLDERS[arg]
        elif arg.startswith("PH_"):
            arg = "value"
        elif "YYYY" in arg:
            arg = arg.replace("YYYY-MM-DD", "2026-12-01")
        filled.append(arg)
    return filled


def _parse(path: tuple[str, ...], command: ClickCommand, args: list[str]) -> bool:
    """Parse as click does; False for a command named without the arguments it needs (a mention of it)."""
    name = " ".join(("gatehouse", *path))
    try:
        with command.make_context(name, list(args)):
            pass
    except typer.Exit:  # --help
        pass
    except UsageError as error:
        if isinstance(error, MissingParameter) and not args:  # "`gatehouse usage reset` repairs a day"
            return False
        pytest.fail(f"`{name} {' '.join(args)}` as RUNBOOK.md writes it: {error.format_message()}")
    return True


@pytest.fixture
def throwaway(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A fresh SQLite DATA_DIR, a LOG_FILE with a few lines, nothing else of the machine's settings."""
    for name in Settings.model_fields:
        for variable in (name.upper(), f"{name.upper()}_FILE"):
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BACKUP_KEY", "a-backup-key-for-this-test-only-0123")
    log_file = tmp_path / "logs" / "gatehouse.log"
    log_file.parent.mkdir()
    log_file.write_text(
        '{"event": "request", "level": "info", "timestamp": "2026-12-07T10:00:00Z", "request_id": "3f9c2a"}\n'
        '{"event": "upstream_error", "level": "warning", "timestamp": "2026-12-07T10:00:01Z"}\n'
    )
    monkeypatch.setenv("LOG_FILE", str(log_file))
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _run(args: list[str]) -> None:
    get_settings.cache_clear()
    result = CliRunner().invoke(cli_app, args, input="n\n")
    shown = f"`gatehouse {' '.join(args)}` (exit {result.exit_code}):\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    assert "Traceback" not in result.output, shown
    if result.exit_code != 0:
        assert result.output.strip(), f"{shown}\nit failed without saying why"
        # A programming error turned into one line is still a bug, not a clear message.
        assert not re.search(rf"\b({'|'.join(BUG_ERRORS)}):", result.output), shown


def test_the_runbook_shows_commands() -> None:
    commands = _commands(RUNBOOK, PROGRAMS)
    assert len(commands) > 100, "the extraction found too few commands: has the runbook's markup changed?"
    paths = {_split(c.args)[0] for c in commands}
    assert ("db", "stats") in paths and ("backup", "restore") in paths and ("doctor",) in paths


def test_extraction_reads_commands_as_the_shell_does() -> None:
    text = (
        "`docker compose exec gatehouse gatehouse db current`, `sudo -u gatehouse gatehouse-cli backup list`, "
        "`systemctl stop gatehouse`\n```\ngatehouse logs --since 1h | jq . # a comment\n"
        "BACKUP_KEY=<old> gatehouse backup verify NAME\n```\n"
    )
    found = _commands(text, PROGRAMS)
    assert [c.args for c in found] == [
        ("db", "current"),
        ("backup", "list"),
        ("logs", "--since", "1h"),
        ("backup", "verify", "NAME"),
    ]
    assert found[3].has_placeholders and found[3].has_environment and not found[2].has_placeholders


def test_a_wrong_option_fails_the_parse() -> None:
    path, command, rest = _split(("db", "stats", "--tabels", "20"))
    with pytest.raises(pytest.fail.Exception, match="--tabels"):
        _parse(path, command, rest)
    with pytest.raises(AssertionError, match="not a command"):
        _split(("db", "stat"))


def test_every_runbook_command_runs_or_parses(throwaway: Path) -> None:
    started = time.monotonic()
    _run(["demo", "seed"])  # people, groups, keys and traffic, so that ids and emails exist
    ran: list[str] = []
    parsed: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for command in _commands(RUNBOOK, PROGRAMS):
        path, click_command, rest = _split(command.args)
        assert path in RUNNABLE or path in PARSED_ONLY, f"add `gatehouse {' '.join(path)}` to RUNNABLE or PARSED_ONLY"
        complete = _parse(path, click_command, _filled(rest))
        live = not complete or path in PARSED_ONLY or any(arg.split("=")[0] in LIVE_OPTIONS for arg in rest)
        if live or command.has_placeholders or command.has_environment or command.args in seen:
            parsed.append(command.text)
            continue
        seen.add(command.args)
        _run(list(command.args))
        ran.append(command.text)
    assert len(ran) > 60, f"only {len(ran)} commands ran for real"
    print(f"{len(ran)} commands run, {len(parsed)} parsed, in {time.monotonic() - started:.1f} s")


def _local_ha_usage() -> dict[str, set[str]]:
    """The script's subcommands (its `main` dispatch) and the options its usage header gives each."""
    dispatch = LOCAL_HA[LOCAL_HA.index("main() {") :]
    subcommands = set(re.findall(r"^\s+([a-z-]+)\) cmd_", dispatch, flags=re.M))
    usage: dict[str, set[str]] = {}
    for name in subcommands:
        lines = re.findall(rf"^#\s+scripts/local-ha\.sh {re.escape(name)}\b(.*)$", LOCAL_HA, flags=re.M)
        assert lines, f"local-ha.sh's usage header does not show `{name}`"
        usage[name] = set(re.findall(r"-{1,2}[a-z][a-z-]*", lines[0]))
    return usage


def test_local_ha_commands_exist() -> None:
    usage = _local_ha_usage()
    assert {"up", "down", "status", "restart-replica", "logs", "env"} <= set(usage)
    commands = _commands(RUNBOOK, {"scripts/local-ha.sh"})
    assert len(commands) >= 6
    for command in commands:
        name, *rest = command.args
        assert name in usage, f"`scripts/local-ha.sh {name}` is not one of {sorted(usage)}"
        for option in (arg for arg in rest if arg.startswith("-")):
            assert option in usage[name], f"`scripts/local-ha.sh {name}` has no option {option}"
