"""`gatehouse support-bundle`: a ZIP of redacted config, doctor output, health, versions, recent logs and a
metrics snapshot, for an escalation."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from gatehouse.cli.common import console, err_console, plain_errors, quiet_settings, run
from gatehouse.cli.doctor_checks import run_doctor
from gatehouse.diagnostics.bundle import BundleRequest, BundleResult, write_bundle
from gatehouse.diagnostics.logfilter import parse_when


def support_bundle(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write the ZIP (default: gatehouse-support-HOST-TIME.zip here)."
    ),
    url: str | None = typer.Option(
        None, "--url", help="The running server (e.g. http://127.0.0.1:8000), for its health and /metrics."
    ),
    key: str | None = typer.Option(None, "--key", help="An API key of a monitor or admin, for GET /admin/health."),
    key_file: Path | None = typer.Option(None, "--key-file", help="Read the API key from this file instead."),
    since: str = typer.Option("24h", "--since", help="How far back the logs go: 30m, 24h, 2d, or an ISO time."),
    max_log_mb: int = typer.Option(100, "--max-log-mb", min=1, help="Keep at most this much of the newest logs."),
) -> None:
    """Write a support bundle: redacted settings, doctor, health, database revision and replicas, a metrics
    snapshot and the recent LOG_FILE lines, with every secret left out and personal data masked."""
    try:
        start = parse_when(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {key_file}: {exc.strerror}", param_hint="--key-file") from None
    if url is not None and not url.startswith(("http://", "https://")):
        raise typer.BadParameter("give the server's URL, e.g. http://127.0.0.1:8000", param_hint="--url")
    settings = quiet_settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = output or Path(f"gatehouse-support-{socket.gethostname()}-{stamp}.zip")
    url = url.rstrip("/") if url else None

    async def doctor() -> dict[str, Any]:
        return (await run_doctor(settings, url=url, key=key)).as_dict()

    request = BundleRequest(
        since=start,
        url=url,
        key=key,
        max_log_bytes=max_log_mb * 1024 * 1024,
        extras={"doctor.json": doctor},
    )
    with plain_errors(settings):
        result = run(lambda: write_bundle(settings, request, target), settings)
    _report(result)


def _report(result: BundleResult) -> None:
    console.print(f"Wrote {result.path} ({result.path.stat().st_size} bytes):", highlight=False)
    for name, size in result.members.items():
        console.print(f"  {name}  {size} bytes", highlight=False)
    for name, why in result.missing.items():
        err_console.print(f"  [yellow]not included[/yellow] {name}: {why}", highlight=False, soft_wrap=True)
    console.print("Secrets are left out and personal data masked; look inside before sending it anyway.")
