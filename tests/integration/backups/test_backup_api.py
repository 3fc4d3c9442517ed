"""The backups API on SQLite and PostgreSQL: the list (damaged ones with their problem) and verify, as the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.backups.create import create_backup
from gatehouse.settings import Settings
from tests.conftest import make_settings, running_app


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", backup_dir=tmp_path / "backups")


async def test_list_and_verify_intact_and_damaged_backups(settings: Settings) -> None:
    async with running_app(settings) as harness:
        client = harness.client
        assert (await client.get("/admin/backups")).json() == {"backups": [], "damaged": 0}

        intact = await create_backup(settings, encrypt=False)
        broken = await create_backup(settings, encrypt=False)
        manifest = settings.backup_dir / f"{broken.name}.json"
        manifest.write_text(manifest.read_text()[:30])

        listed = (await client.get("/admin/backups")).json()
        assert listed["damaged"] == 1
        by_name = {b["name"]: b for b in listed["backups"]}
        assert [b["name"] for b in listed["backups"]] == [broken.name, intact.name]  # newest first
        good = by_name[intact.name]
        assert good["state"] == "ok" and good["problem"] is None
        assert good["database"] == ("sqlite" if settings.is_sqlite else "postgresql")
        assert good["size"] == intact.size and good["rows"] == intact.total_rows and good["encrypted"] is False
        assert good["revision"] == list(intact.revision) and good["tables"] == len(intact.rows)
        bad = by_name[broken.name]
        assert bad["state"] == "damaged" and bad["damaged_part"] == "manifest"
        assert bad["problem"].startswith(f"its manifest {broken.name}.json is not valid JSON"), bad["problem"]

        ok = await client.post(f"/admin/backups/{intact.name}/verify")
        assert ok.status_code == 200, ok.text
        assert ok.json() == {
            "name": intact.name,
            "ok": True,
            "problems": [],
            "tables": len(intact.rows),
            "rows": intact.total_rows,
        }

        failed = (await client.post(f"/admin/backups/{broken.name}/verify")).json()
        assert failed["ok"] is False and failed["problems"] == [bad["problem"]]

        # A truncated file is found by verify: the file no longer matches its manifest.
        stored = settings.backup_dir / intact.file
        stored.write_bytes(stored.read_bytes()[: intact.size // 2])
        listed = (await client.get("/admin/backups")).json()
        assert "it is truncated" in {b["name"]: b for b in listed["backups"]}[intact.name]["problem"]
        truncated = (await client.post(f"/admin/backups/{intact.name}/verify")).json()
        assert truncated["ok"] is False and "it is truncated" in truncated["problems"][0]


async def test_an_unknown_name_is_a_404_and_a_bad_name_is_refused(settings: Settings) -> None:
    async with running_app(settings) as harness:
        missing = await harness.client.post("/admin/backups/gatehouse-20000101T000000Z/verify")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "backup_not_found"
        bad = await harness.client.post("/admin/backups/..hidden/verify")
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "backup_name"
        assert "is not a backup name" in bad.json()["error"]["message"]
