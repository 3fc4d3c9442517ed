"""Backup pieces that need no database: the manifest's file form, names, and the PostgreSQL tools' environment."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatehouse.backups.create import _reserve
from gatehouse.backups.manifest import Manifest
from gatehouse.backups.postgres import libpq_environment

MANIFEST = Manifest(
    name="gatehouse-20261122T030000Z",
    kind="regular",
    created_at=datetime(2026, 11, 22, 3, 0, 0, 123456, tzinfo=UTC),
    database="postgresql",
    revision=("0005",),
    rows={"user_account": 2, "audit_event": 7},
    file="gatehouse-20261122T030000Z.pgdump.enc",
    size=1234,
    sha256="ab" * 32,
    encrypted=True,
    plaintext_size=1100,
    plaintext_sha256="cd" * 32,
    gatehouse_version="0.1.0",
    duration_seconds=0.5,
)


def test_the_manifest_round_trips_through_its_file() -> None:
    assert Manifest.from_json(MANIFEST.to_json()) == MANIFEST
    assert MANIFEST.counts() == {
        "name": MANIFEST.name,
        "bytes": 1234,
        "rows": 9,
        "tables": 2,
        "encrypted": 1,
    }
    with pytest.raises(ValueError, match="format"):
        Manifest.from_json(MANIFEST.to_json().replace('"format": 1', '"format": 9'))


def test_names_are_unique_within_a_second_and_never_reused(tmp_path: Path) -> None:
    when = datetime(2026, 11, 22, 3, 0, 0, tzinfo=UTC)
    first, _ = _reserve(tmp_path, when, "regular")
    second, _ = _reserve(tmp_path, when, "regular")
    safety, _ = _reserve(tmp_path, when, "safety")
    assert (first, second, safety) == (
        "gatehouse-20261122T030000Z",
        "gatehouse-20261122T030000Z-2",
        "gatehouse-20261122T030000Z-safety",
    )
    (tmp_path / f".{first}.partial").unlink()  # as if pruned: the name is still not given out again
    assert _reserve(tmp_path, when, "regular")[0] == "gatehouse-20261122T030000Z-3"


def test_the_tools_get_the_password_in_their_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGHOST", raising=False)
    env = libpq_environment("postgresql+asyncpg://gh:p%40ss@db.internal:6432/gatehouse?ssl=verify-full")
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGPASSWORD"]) == ("db.internal", "6432", "gh", "p@ss")
    assert (env["PGDATABASE"], env["PGSSLMODE"]) == ("gatehouse", "verify-full")
    assert libpq_environment("postgresql+asyncpg://gh@db/gatehouse", database="scratch")["PGDATABASE"] == "scratch"
    # What the URL leaves out comes from the inherited environment, as for the server's own connections.
    monkeypatch.setenv("PGPASSWORD", "from-env")
    bare = libpq_environment("postgresql+asyncpg:///gatehouse")
    assert bare["PGPASSWORD"] == "from-env" and "PGHOST" not in bare


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("../../etc/cron.d/x", "../../etc/cron.d/x.sqlite"),
        ("gatehouse-20261122T030000Z", "/work/data/gatehouse.db"),
        ("gatehouse-20261122T030000Z", "gatehouse-other.sqlite"),
        ("gatehouse-20261122T030000Z", "gatehouse-20261122T030000Z.json"),
    ],
)
def test_a_manifest_naming_a_file_outside_its_backup_is_refused(name: str, file: str) -> None:
    good = MANIFEST
    text = good.to_json().replace(f'"name": "{good.name}"', f'"name": "{name}"')
    text = text.replace(f'"file": "{good.file}"', f'"file": "{file}"')
    with pytest.raises(ValueError, match="not a backup of this directory"):
        Manifest.from_json(text)
    assert Manifest.from_json(good.to_json()) == good
