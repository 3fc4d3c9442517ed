"""`gatehouse doctor`: the production checklist of the runbooks, as checks (cli/doctor_checks/)."""

from __future__ import annotations

import json

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from gatehouse.cli.common import console, quiet_settings, run
from gatehouse.cli.doctor_checks import DoctorReport, Status, run_doctor

STYLES = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of a table."),
    smoke: bool = typer.Option(
        False, "--smoke", help="Also send a real chat completion and embedding through the gateway at --url."
    ),
    url: str | None = typer.Option(
        None,
        "--url",
        envvar="GATEHOUSE_URL",
        help="The gateway for --smoke, e.g. https://ai.example.com (default: PUBLIC_URL).",
    ),
    key: str | None = typer.Option(
        None, "--key", envvar="GATEHOUSE_API_KEY", help="An API key for --smoke (better: GATEHOUSE_API_KEY)."
    ),
    chat_model: str | None = typer.Option(
        None, "--chat-model", help="The chat model --smoke uses (default: the first GET /v1/models lists)."
    ),
    embed_model: str | None = typer.Option(
        None, "--embed-model", help="The embeddings model --smoke uses (default: the first one listed)."
    ),
) -> None:
    """Check this deployment against the production checklist: each check PASS, WARN, FAIL or SKIP, with its fix.

    Exit code: 0 when everything passed (or was skipped), 1 when the worst is a WARN, 2 when something FAILed.
    """
    settings = quiet_settings()
    report = run(
        lambda: run_doctor(settings, smoke=smoke, url=url, key=key, chat_model=chat_model, embed_model=embed_model),
        settings,
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report)
    raise typer.Exit(report.exit_code)


def _print(report: DoctorReport) -> None:
    table = Table(box=box.SIMPLE_HEAD, title=f"gatehouse doctor ({report.version})", title_justify="left")
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding, and the fix")  # the fix under its finding: readable on a narrow terminal too
    for check in report.checks:
        style = STYLES[check.status]
        timing = f" [dim]({check.seconds * 1000:.0f} ms)[/dim]" if check.seconds is not None else ""
        fix = f"\n[{style}]fix:[/{style}] {escape(check.fix)}" if check.fix else ""
        table.add_row(
            f"[{style}]{check.status.value}[/{style}]", escape(check.name), escape(check.summary) + timing + fix
        )
    console.print(table)
    style = STYLES[report.worst]
    console.print(f"worst: [{style}]{report.worst.value}[/{style}] in {report.seconds:.1f} s", highlight=False)
