"""BACKUP_DIR as the backups see it, with no database: intact backups, damaged ones (and what is wrong with each),
ones still being written, and pruning that never counts nor removes a damaged one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatehouse.backups.create import _prune
from gatehouse.backups.manifest import Damaged, Manifest, read_inventory, write_manifest


def _backup(directory: Path, when: datetime, *, kind: str = "regular", content: bytes = b"backup data") -> Manifest:
    """A backup's files as create_backup leaves them (the content is not a database: nothing here opens it)."""
    name = f"gatehouse-{when:%Y%m%dT%H%M%SZ}" + ("-safety" if kind == "safety" else "")
    sha = hashlib.sha256(content).hexdigest()
    manifest = Manifest(
        name=name,
        kind=kind,
        created_at=when,
        database="sqlite",
        revision=("0005",),
        rows={"user_account": 2},
        file=f"{name}.sqlite",
        size=len(content),
        sha256=sha,
        encrypted=False,
        plaintext_size=len(content),
        plaintext_sha256=sha,
        gatehouse_version="0.1.0",
        duration_seconds=0.1,
    )
    (directory / manifest.file).write_bytes(content)
    write_manifest(directory, manifest)
    return manifest


def _json_edit(change: Callable[[dict[str, object]], None]) -> Callable[[Path, Manifest], None]:
    def edit(directory: Path, manifest: Manifest) -> None:
        path = directory / f"{manifest.name}.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return edit


def _truncate(directory: Path, manifest: Manifest) -> None:
    path = directory / f"{manifest.name}.json"
    path.write_text(path.read_text()[:100])


DAMAGE: dict[str, tuple[Callable[[Path, Manifest], None], str, str]] = {
    "not JSON": (
        lambda d, m: (d / f"{m.name}.json").write_text("{this is not json"),
        "manifest",
        "is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)",
    ),
    "truncated": (_truncate, "manifest", "is not valid JSON ("),
    "empty": (lambda d, m: (d / f"{m.name}.json").write_text(""), "manifest", "is empty"),
    "deleted": (
        lambda d, m: (d / f"{m.name}.json").unlink(),
        "manifest",
        "is missing: the backup never finished, or the manifest was deleted",
    ),
    "not an object": (lambda d, m: (d / f"{m.name}.json").write_text("[1, 2]"), "manifest", "is not a JSON object"),
    "no format": (_json_edit(lambda data: data.pop("format")), "manifest", "lacks format"),
    "another format": (_json_edit(lambda data: data.update(format=2)), "manifest", "has the format 2"),
    "fields missing": (
        _json_edit(lambda data: [data.pop("rows"), data.pop("sha256")]),
        "manifest",
        "lacks rows, sha256",
    ),
    "size as text": (
        _json_edit(lambda data: data.update(size="11")),
        "manifest",
        "has '11' as its size, where a number of bytes belongs",
    ),
    "rows not counts": (
        _json_edit(lambda data: data.update(rows=[1, 2])),
        "manifest",
        "has [1, 2] as its rows, where an object of table names and row counts belongs",
    ),
    "time without zone": (
        _json_edit(lambda data: data.update(created_at="2026-11-22T03:00:00")),
        "manifest",
        "as its created_at, where an ISO 8601 time with its UTC offset belongs",
    ),
    "file of another kind": (
        _json_edit(lambda data: data.update(encrypted=True)),
        "manifest",
        "says sqlite, encrypted, but names the file",
    ),
    "another backup's": (
        _json_edit(
            lambda data: data.update(name="gatehouse-20200101T000000Z", file="gatehouse-20200101T000000Z.sqlite")
        ),
        "manifest",
        "is gatehouse-20200101T000000Z's: it was renamed or copied",
    ),
    "file missing": (lambda d, m: (d / m.file).unlink(), "file", "its file {file} is missing"),
    "file cut short": (
        lambda d, m: (d / m.file).write_bytes(b"backup"),
        "file",
        "its file {file} is 6 bytes, the manifest says 11: it is truncated",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_backup_is_listed_with_what_is_wrong_beside_the_intact_ones(tmp_path: Path, damage: str) -> None:
    when = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    older = _backup(tmp_path, when - timedelta(days=1))
    broken = _backup(tmp_path, when)
    newer = _backup(tmp_path, when + timedelta(days=1), kind="safety")
    make, part, problem = DAMAGE[damage]
    make(tmp_path, broken)

    found = read_inventory(tmp_path)
    assert found.intact == (newer, older)
    (damaged,) = found.damaged
    assert (damaged.name, damaged.kind, damaged.created_at, damaged.part) == (broken.name, "regular", when, part)
    if part == "manifest":
        assert damaged.problem.startswith(f"its manifest {broken.name}.json "), damaged.problem
    assert problem.format(file=broken.file) in damaged.problem
    assert damaged.files == tuple(sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(broken.name)))
    assert [b.name for b in found.newest_first()] == [newer.name, broken.name, older.name]


def test_a_backup_being_written_is_not_damaged_until_its_claim_is_stale(tmp_path: Path) -> None:
    # create_backup holds `.NAME.partial` from the start until its manifest is in place: the moment between the
    # file's arrival and the manifest's is not damage.
    writing = _backup(tmp_path, datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    (tmp_path / f"{writing.name}.json").unlink()
    claim = tmp_path / f".{writing.name}.partial"
    claim.touch()
    assert read_inventory(tmp_path).damaged == ()
    # A claim left by a process killed in that moment goes stale after a day: then the backup is damaged.
    day_ago = time.time() - 24 * 3600 - 60
    os.utime(claim, (day_ago, day_ago))
    (damaged,) = read_inventory(tmp_path).damaged
    assert damaged.name == writing.name and "is missing" in damaged.problem


def test_a_damaged_backup_without_a_time_in_its_name_sorts_by_its_files_time(tmp_path: Path) -> None:
    (tmp_path / "copied-by-hand.json").write_text("{}")
    then = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    os.utime(tmp_path / "copied-by-hand.json", (then.timestamp(), then.timestamp()))
    (tmp_path / "notes.txt").write_text("not a backup's file: not listed")
    (damaged,) = read_inventory(tmp_path).damaged
    assert damaged == Damaged(
        "copied-by-hand",
        "regular",
        then,
        ("copied-by-hand.json",),
        "manifest",
        "its manifest copied-by-hand.json lacks format: it is not a Gatehouse backup manifest",
    )


def test_pruning_counts_and_removes_only_intact_backups(tmp_path: Path) -> None:
    start = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    oldest_good = _backup(tmp_path, start)
    damaged = [_backup(tmp_path, start + timedelta(days=day)) for day in (1, 2, 3)]
    for backup, damage in zip(damaged, ("not JSON", "deleted", "file cut short"), strict=True):
        DAMAGE[damage][0](tmp_path, backup)
    newest_good = _backup(tmp_path, start + timedelta(days=4))

    # Two generations kept: the damaged ones in between do not push the older intact backup out.
    assert _prune(tmp_path, "regular", 2) == []
    assert read_inventory(tmp_path).intact == (newest_good, oldest_good)
    assert len(read_inventory(tmp_path).damaged) == 3

    # One kept: the older intact backup goes; the damaged ones stay for a person to look at.
    before = {p.name for p in tmp_path.iterdir() if any(p.name.startswith(d.name) for d in damaged)}
    assert _prune(tmp_path, "regular", 1) == [oldest_good.name]
    assert read_inventory(tmp_path).intact == (newest_good,)
    assert {p.name for p in tmp_path.iterdir() if any(p.name.startswith(d.name) for d in damaged)} == before


def test_a_manifest_whose_file_is_not_of_its_kind_is_explained(tmp_path: Path) -> None:
    manifest = _backup(tmp_path, datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    assert Manifest.from_json(manifest.to_json()) == manifest
    edited = dataclasses.replace(manifest, file=manifest.name + ".pgdump")
    with pytest.raises(ValueError, match=r"says sqlite, not encrypted, but names the file .*\.pgdump"):
        Manifest.from_json(edited.to_json())
