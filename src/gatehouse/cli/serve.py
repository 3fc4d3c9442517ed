"""`gatehouse serve`: migrate, bootstrap, then run uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import resource
import shutil
import signal
import tempfile
from pathlib import Path

import typer
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from gatehouse import __version__
from gatehouse.cli.common import console, err_console, load_settings, plain_errors
from gatehouse.configuration.pidfile import pid_file
from gatehouse.core.shutdown import SETTLE_SECONDS, CloseWhileDraining
from gatehouse.core.transport import CoalescingHttpToolsProtocol
from gatehouse.db.migrate import MigrationError


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for all interfaces)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes; more than one needs REDIS_URL."),
    forwarded_allow_ips: str = typer.Option(
        "127.0.0.1",
        envvar="FORWARDED_ALLOW_IPS",
        help="Proxies whose X-Forwarded-For is trusted for client IPs (comma-separated, or *).",
    ),
) -> None:
    """Serve the gateway: applies migrations (RUN_MIGRATIONS), creates the bootstrap admin, then listens."""
    gc.disable()  # the app's modules load faster without collections in between (see gatehouse/entry.py)
    try:
        from gatehouse.core.logging import configure_logging
        from gatehouse.runtime import PREPARED_ENV, UnsafeSettings, announce, check_settings, prepare
    finally:
        gc.enable()

    settings = load_settings()
    configure_logging(settings)
    try:
        check_settings(settings)
    except UnsafeSettings as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if workers > 1 and not settings.redis_url:
        err_console.print(
            "[red]--workers > 1 needs REDIS_URL:[/red] workers share key revocations and rate limits "
            "through Redis. Set REDIS_URL, or run one worker."
        )
        raise typer.Exit(2)
    with plain_errors(settings, (SQLAlchemyError, OSError, MigrationError)):  # e.g. the database is unreachable
        announce(asyncio.run(prepare(settings)))
    os.environ[PREPARED_ENV] = "1"
    raise_file_limit()
    created_metrics_dir = prepare_metrics_dir(workers)
    try:
        # DATA_DIR/gatehouse.pid: what `gatehouse reload` sends SIGHUP to when there is no Redis (see runtime.py).
        with pid_file(settings.data_dir, workers=workers):
            # uvicorn re-raises the SIGTERM it shut down for once done: as SystemExit, so the pid file is removed.
            signal.signal(signal.SIGTERM, _exit_on_signal)
            # Until the app listens for it (runtime.py), a SIGHUP (a reload sent too early) must not end the server.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            _run(host, port, workers, forwarded_allow_ips, settings.shutdown_deadline_seconds)
    finally:
        if created_metrics_dir is not None:
            shutil.rmtree(created_metrics_dir, ignore_errors=True)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def raise_file_limit() -> None:
    """Open-file limit up to the hard limit: every stream holds two sockets (client and upstream), and a soft
    limit of 1,024 (a common default) would refuse connections at about 500 concurrent streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def prepare_metrics_dir(workers: int) -> Path | None:
    """With several workers, a clean PROMETHEUS_MULTIPROC_DIR for their metric files; the dir we created, if any.

    Set here, in the parent, before uvicorn spawns the workers: each imports prometheus-client afresh and
    sees it (prometheus-client reads it at import). Files of an earlier run would add stale values: cleared.
    """
    if workers <= 1 and not os.environ.get(MULTIPROC_ENV):
        return None
    if existing := os.environ.get(MULTIPROC_ENV):
        directory = Path(existing)
        directory.mkdir(parents=True, exist_ok=True)
        mine = f"_{os.getpid()}.db"  # with one worker, this process already holds its own files there
        for stale in directory.glob("*.db"):
            if not stale.name.endswith(mine):
                stale.unlink(missing_ok=True)
        return None
    created = Path(tempfile.mkdtemp(prefix="gatehouse-metrics-"))
    os.environ[MULTIPROC_ENV] = str(created)
    return created


def create_served_app() -> CloseWhileDraining:
    """The app as `gatehouse serve` runs it: answers say `Connection: close` once SIGTERM started the drain."""
    from gatehouse.app import create_app

    return CloseWhileDraining(create_app())


def _run(host: str, port: int, workers: int, forwarded_allow_ips: str, deadline_seconds: float) -> None:
    uvicorn.run(
        "gatehouse.cli.serve:create_served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,  # httptools, with a response's writes gathered (core/transport.py)
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        # After SIGTERM's drain (core/shutdown.py): the deadline ends what still runs, which then gets a few
        # seconds to send its error event and settle before uvicorn cancels anything left.
        timeout_graceful_shutdown=math.ceil(deadline_seconds + SETTLE_SECONDS),
    )


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # what a shell reports for a process ended by that signal


def version() -> None:
    """Print Gatehouse's version."""
    console.print(__version__)
