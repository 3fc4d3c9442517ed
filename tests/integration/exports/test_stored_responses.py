"""Stored responses in exports and deletion requests: a masked export lists them without their contents (message
contents go into raw exports only), and deleting or anonymising a user deletes theirs (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import orjson
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from gatehouse.auth import passwords
from gatehouse.gateway.stored.models import StoredResponse
from tests.conftest import Harness
from tests.support.accounts import create_member
from tests.support.stored_responses import input_message, store

SECRET_TEXT = "my number is +1 (555) 123-4567, write to alice@example.com"


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def _files(content: bytes) -> dict[str, str]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    return {name: archive.read(name).decode() for name in archive.namelist()}


async def _count(harness: Harness, user_id: int) -> int:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(func.count()).select_from(StoredResponse).where(StoredResponse.user_id == user_id)
        return int((await session.execute(query)).scalar_one())


async def _seed(harness: Harness) -> tuple[Any, list[dict[str, Any]]]:
    member = await create_member(harness)
    first, _ = await store(harness, member.id, "hello", key_id=member.key_id)
    second, _ = await store(
        harness, member.id, "again", inputs=[input_message(SECRET_TEXT)], previous=first["id"], key_id=member.key_id
    )
    return member, [first, second]


async def test_a_masked_export_lists_stored_responses_without_their_contents(harness: Harness) -> None:
    member, responses = await _seed(harness)
    other = await create_member(harness)
    await store(harness, other.id, "not theirs")

    masked = await harness.client.post("/admin/export", json={"entities": ["responses"], "user": member.id})
    assert masked.status_code == 200, masked.text
    files = _files(masked.content)
    rows = list(csv.DictReader(io.StringIO(files["responses.csv"])))
    assert [r["id"] for r in rows] == [r["id"] for r in responses]  # in time order, only theirs
    assert list(rows[0]) == ["id", "created_at", "user_id", "key_id", "model", "previous_response_id"]
    assert rows[1]["previous_response_id"] == responses[0]["id"] and rows[1]["key_id"] == str(member.key_id)
    assert rows[0]["created_at"].endswith("Z") and rows[0]["model"] == "demo"
    # The phone number's parts, not a bare "555": a timestamp such as 20:32:56.755504Z holds those digits too.
    for text in ("hello", "again", "(555)", "123-4567", "alice@example.com", "al***"):
        assert text not in files["responses.csv"], text
    manifest = orjson.loads(files["manifest.json"])
    assert manifest["entities"]["responses"]["rows"] == 2
    assert {"responses.input_items", "responses.response"} <= set(manifest["masking"]["left_out"])

    raw = await harness.client.post(
        "/admin/export",
        json={"entities": ["responses"], "user": member.id, "pii": "raw", "reason": "ticket 4711", "format": "jsonl"},
    )
    assert raw.status_code == 200, raw.text
    lines = [orjson.loads(line) for line in _files(raw.content)["responses.jsonl"].splitlines()]
    assert [line["response"] for line in lines] == responses
    assert lines[1]["input_items"][0]["content"][0]["text"] == SECRET_TEXT
    raw_csv = await harness.client.post(
        "/admin/export", json={"entities": ["responses"], "pii": "raw", "reason": "ticket 4711"}
    )
    rows = list(csv.DictReader(io.StringIO(_files(raw_csv.content)["responses.csv"])))
    assert len(rows) == 3 and orjson.loads(rows[1]["response"]) == responses[1]


async def test_deleting_or_anonymising_a_user_deletes_their_stored_responses(harness: Harness) -> None:
    deleted, _ = await _seed(harness)
    anonymised, _ = await _seed(harness)
    bystander, _ = await _seed(harness)

    answer = await harness.client.delete(f"/admin/users/{deleted.id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored_responses"] == 2
    answer = await harness.client.delete(f"/admin/users/{anonymised.id}", params={"mode": "anonymise"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["stored_responses"] == 2 and answer.json()["requests"] == 0
    assert await _count(harness, deleted.id) == 0
    assert await _count(harness, anonymised.id) == 0
    assert await _count(harness, bystander.id) == 2

    events = (await harness.client.get("/admin/audit", params={"action": "user."})).json()["items"]
    counts = {e["action"]: e["details"]["stored_responses"] for e in events if "stored_responses" in e["details"]}
    assert counts == {"user.deleted": 2, "user.anonymised": 2}
