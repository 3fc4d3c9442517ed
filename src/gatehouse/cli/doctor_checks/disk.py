"""Free disk where Gatehouse writes: DATA_DIR, BACKUP_DIR and LOG_FILE's directory (one check per file system).

WARN under DISK_WARN_PERCENT (15%) or DISK_WARN_FREE_MB (2 GB) free, as /admin/health's storage section does; FAIL under
DISK_FAIL_PERCENT (5%) or DISK_FAIL_FREE_MB (500 MB).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gatehouse.cli.doctor_checks.report import Check, failed, passed, skipped, warned
from gatehouse.settings import Settings

MB = 1024 * 1024


def disk_checks(settings: Settings) -> list[Check]:
    """One check per distinct file system under the directories Gatehouse writes to."""
    places = {"DATA_DIR": settings.data_dir, "BACKUP_DIR": settings.backup_dir}
    if settings.log_file is not None:
        places["LOG_FILE's directory"] = settings.log_file.parent
    by_device: dict[int, list[tuple[str, Path]]] = {}
    checks: list[Check] = []
    for label, path in places.items():
        existing = _nearest_existing(path)
        if existing is None:
            checks.append(skipped(f"disk.{label}", f"{label} {path} does not exist"))
            continue
        by_device.setdefault(os.stat(existing).st_dev, []).append((label, existing))
    for places_on_device in by_device.values():
        checks.append(_judge(settings, places_on_device))
    return checks


def _nearest_existing(path: Path) -> Path | None:
    """The path, or its nearest existing parent (a directory not made yet lives on its parent's disk)."""
    for candidate in (path.resolve(), *path.resolve().parents):
        if candidate.exists():
            return candidate
    return None


def _judge(settings: Settings, places: list[tuple[str, Path]]) -> Check:
    usage = shutil.disk_usage(places[0][1])
    labels = ", ".join(f"{label} ({path})" for label, path in places)
    name = "disk." + "+".join(label.split("'")[0] for label, _ in places)
    percent = 100.0 * usage.free / usage.total if usage.total else 0.0
    free = f"{usage.free / MB / 1024:.1f} GB free of {usage.total / MB / 1024:.1f} GB ({percent:.0f}%) for {labels}"
    fix = "free space (old logs, backups beyond BACKUP_KEEP) or grow the volume"
    if percent < settings.disk_fail_percent or usage.free < settings.disk_fail_free_mb * MB:
        limits = f"DISK_FAIL_PERCENT={settings.disk_fail_percent:g} or DISK_FAIL_FREE_MB={settings.disk_fail_free_mb}"
        return failed(name, free, f"{fix} (FAIL under {limits})")
    if percent < settings.disk_warn_percent or usage.free < settings.disk_warn_free_mb * MB:
        limits = f"DISK_WARN_PERCENT={settings.disk_warn_percent:g} or DISK_WARN_FREE_MB={settings.disk_warn_free_mb}"
        return warned(name, free, f"{fix} (WARN under {limits})")
    return passed(name, free)
