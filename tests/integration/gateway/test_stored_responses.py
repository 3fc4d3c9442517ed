"""Stored responses (Responses API): saved by the gateway per user, read back through GET /v1/responses/{id}, its
input items and `previous_response_id`, deleted, and purged after RESPONSES_RETENTION_DAYS; another user's id is
an unknown one (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select, update

from gatehouse.db.base import utcnow
from gatehouse.gateway.stored.errors import ResponseNotFound
from gatehouse.gateway.stored.models import StoredResponse
from gatehouse.gateway.stored.service import MAX_ANCESTORS
from tests.conftest import Harness
from tests.support.accounts import create_member, error_of
from tests.support.stored_responses import input_message, store


def _texts(items: list[dict[str, Any]]) -> list[str]:
    return [part["text"] for item in items for part in item["content"]]


def _sdk(harness: Harness, key: str) -> openai.AsyncOpenAI:
    """The official client, talking to the app in-process."""
    transport = httpx.ASGITransport(app=harness.app)
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://gatehouse.test/v1", http_client=httpx.AsyncClient(transport=transport)
    )


async def _count(harness: Harness, *where: Any) -> int:
    async with harness.runtime.db.sessionmaker() as session:
        query = select(func.count()).select_from(StoredResponse).where(*where)
        return int((await session.execute(query)).scalar_one())


async def test_a_stored_response_is_read_listed_and_deleted_by_its_owner(harness: Harness) -> None:
    member = await create_member(harness)
    inputs = [input_message(f"question {i}") for i in range(5)]
    response, _ = await store(harness, member.id, "five questions", inputs=inputs, key_id=member.key_id)
    rid = response["id"]
    headers = harness.as_key(member.key)

    got = await harness.client.get(f"/v1/responses/{rid}", headers=headers)
    assert got.status_code == 200, got.text
    assert got.json() == response

    listed = await harness.client.get(f"/v1/responses/{rid}/input_items", headers=headers)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["object"] == "list" and page["has_more"] is False
    assert page["data"] == inputs[::-1]  # desc by default: the last item first
    assert (page["first_id"], page["last_id"]) == (inputs[4]["id"], inputs[0]["id"])

    params: dict[str, Any] = {"order": "asc", "limit": 2}
    first = (await harness.client.get(f"/v1/responses/{rid}/input_items", params=params, headers=headers)).json()
    assert [i["id"] for i in first["data"]] == [inputs[0]["id"], inputs[1]["id"]] and first["has_more"] is True
    params["after"] = first["last_id"]
    second = (await harness.client.get(f"/v1/responses/{rid}/input_items", params=params, headers=headers)).json()
    assert [i["id"] for i in second["data"]] == [inputs[2]["id"], inputs[3]["id"]] and second["has_more"] is True
    params["after"] = second["last_id"]
    last = (await harness.client.get(f"/v1/responses/{rid}/input_items", params=params, headers=headers)).json()
    assert [i["id"] for i in last["data"]] == [inputs[4]["id"]] and last["has_more"] is False
    desc = {"limit": 2, "after": inputs[2]["id"], "include": ["message.input_image.image_url"]}
    newer_first = (await harness.client.get(f"/v1/responses/{rid}/input_items", params=desc, headers=headers)).json()
    assert [i["id"] for i in newer_first["data"]] == [inputs[1]["id"], inputs[0]["id"]]
    unknown_after = {"after": "msg_nope"}
    empty = (await harness.client.get(f"/v1/responses/{rid}/input_items", params=unknown_after, headers=headers)).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    for limit in (0, 101):
        refused = await harness.client.get(f"/v1/responses/{rid}/input_items", params={"limit": limit}, headers=headers)
        assert refused.status_code == 422 and error_of(refused)["param"] == "limit", refused.text
    bad_order = await harness.client.get(f"/v1/responses/{rid}/input_items", params={"order": "up"}, headers=headers)
    assert bad_order.status_code == 422

    deleted = await harness.client.delete(f"/v1/responses/{rid}", headers=headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": rid, "object": "response", "deleted": True}
    for method, path in (("GET", rid), ("DELETE", rid), ("GET", f"{rid}/input_items")):
        gone = await harness.client.request(method, f"/v1/responses/{path}", headers=headers)
        assert gone.status_code == 404, (method, path)
        assert error_of(gone)["code"] == "response_not_found" and error_of(gone)["type"] == "not_found_error"
    assert await _count(harness, StoredResponse.id == rid) == 0


async def test_another_users_response_is_not_found_on_every_route(harness: Harness) -> None:
    owner, other = await create_member(harness), await create_member(harness)
    response, _ = await store(harness, owner.id, "mine")
    rid = response["id"]
    for path in (f"/v1/responses/{rid}", f"/v1/responses/{rid}/input_items", "/v1/responses/resp_unknown"):
        for method in ("GET", "DELETE") if "input_items" not in path else ("GET",):
            for caller in (other.key, None):  # another user, and the bootstrap superadmin
                answer = await harness.client.request(method, path, headers=harness.as_key(caller) if caller else {})
                assert answer.status_code == 404, (method, path, answer.text)
                error = error_of(answer)
                assert error["code"] == "response_not_found", error
                assert "previous_response_id" not in error["message"] and owner.email not in error["message"]
    with pytest.raises(ResponseNotFound) as refused:
        await harness.runtime.gateway.stored_responses.conversation(other.id, rid)
    assert refused.value.param == "previous_response_id"
    assert await harness.runtime.gateway.stored_responses.get(other.id, rid) is None
    assert await harness.runtime.gateway.stored_responses.delete(other.id, rid) is False
    assert await harness.runtime.gateway.stored_responses.input_items(other.id, rid) is None
    # Still there for its owner, untouched.
    assert await harness.runtime.gateway.stored_responses.get(owner.id, rid) == response
    assert (await harness.client.get(f"/v1/responses/{rid}", headers=harness.as_key(owner.key))).status_code == 200
    anonymous = await harness.client.get(f"/v1/responses/{rid}", headers={"authorization": ""})
    assert anonymous.status_code == 401


async def test_a_conversation_runs_from_the_oldest_ancestor_and_stops_at_a_gap(harness: Harness) -> None:
    member = await create_member(harness)
    stored = harness.runtime.gateway.stored_responses
    first, _ = await store(harness, member.id, "one")
    second, _ = await store(harness, member.id, "two", previous=first["id"])
    third, _ = await store(harness, member.id, "three", previous=second["id"])
    branch, _ = await store(harness, member.id, "two again", previous=first["id"])

    assert _texts(await stored.conversation(member.id, first["id"])) == ["one", "answer to one"]
    assert _texts(await stored.conversation(member.id, third["id"])) == [
        *("one", "answer to one", "two", "answer to two", "three", "answer to three"),
    ]
    assert _texts(await stored.conversation(member.id, branch["id"])) == [
        *("one", "answer to one", "two again", "answer to two again"),
    ]
    items = await stored.conversation(member.id, third["id"])
    assert items[1] == first["output"][0]  # the output items as answered, ids and all

    # A deleted ancestor ends the chain there: what came after it still continues.
    assert await stored.delete(member.id, second["id"]) is True
    assert _texts(await stored.conversation(member.id, third["id"])) == ["three", "answer to three"]
    with pytest.raises(ResponseNotFound):
        await stored.conversation(member.id, second["id"])


async def test_a_long_conversation_keeps_its_newest_part(harness: Harness) -> None:
    member = await create_member(harness)
    previous = None
    for i in range(MAX_ANCESTORS + 3):
        response, _ = await store(harness, member.id, f"turn {i}", previous=previous)
        previous = response["id"]
    assert previous is not None
    texts = _texts(await harness.runtime.gateway.stored_responses.conversation(member.id, previous))
    assert len(texts) == 2 * (MAX_ANCESTORS + 1)  # this response and MAX_ANCESTORS before it
    assert texts[0] == "turn 2" and texts[-1] == f"answer to turn {MAX_ANCESTORS + 2}"


async def test_the_openai_client_reads_lists_and_deletes(harness: Harness) -> None:
    member = await create_member(harness)
    inputs = [input_message(f"question {i}") for i in range(25)]
    response, _ = await store(harness, member.id, "many", inputs=inputs)
    async with _sdk(harness, member.key) as client:
        got = await client.responses.retrieve(response["id"])
        assert got.id == response["id"] and got.output_text == "answer to many"
        listed = [item.id async for item in client.responses.input_items.list(response["id"], order="asc", limit=10)]
        assert listed == [item["id"] for item in inputs]  # three pages, followed by the client
        await client.responses.delete(response["id"])
        with pytest.raises(openai.NotFoundError) as missing:
            await client.responses.retrieve(response["id"])
        assert missing.value.code == "response_not_found"


async def test_the_purge_removes_what_is_past_retention(harness: Harness) -> None:
    member = await create_member(harness)
    old, _ = await store(harness, member.id, "old")
    recent, _ = await store(harness, member.id, "recent")
    now = utcnow()
    retention = timedelta(days=harness.settings.responses_retention_days)
    assert retention == timedelta(days=30)
    for response, age in ((old, retention + timedelta(minutes=1)), (recent, retention - timedelta(minutes=1))):
        async with harness.runtime.db.sessionmaker() as session, session.begin():
            moved = update(StoredResponse).where(StoredResponse.id == response["id"]).values(created_at=now - age)
            await session.execute(moved)

    run = (await harness.client.post("/admin/jobs/purge/run")).json()
    assert run["status"] == "ok", run
    assert run["counts"]["stored_responses"] == 1
    assert await _count(harness, StoredResponse.id == old["id"]) == 0
    assert await _count(harness, StoredResponse.id == recent["id"]) == 1
    assert (await harness.client.post("/admin/jobs/purge/run")).json()["counts"]["stored_responses"] == 0
