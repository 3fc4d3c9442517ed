"""Accounts for tests: users and API keys made through the admin API, as an operator would make them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import Harness

_serial = itertools.count(1)


@dataclass
class Member:
    """A user created through the admin API, with one API key."""

    id: int
    email: str
    key: str
    key_id: int


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI-shaped error object of a response."""
    error = response.json()["error"]
    assert isinstance(error, dict), response.text
    return error


async def create_user(harness: Harness, role: str = "user", *, password: str | None = None) -> dict[str, Any]:
    """A new user, created by the bootstrap superadmin."""
    body: dict[str, Any] = {"email": f"{role}-{next(_serial)}@example.com", "role": role}
    if password is not None:
        body["password"] = password
    response = await harness.client.post("/admin/users", json=body)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def create_member(harness: Harness, role: str = "user", *, password: str | None = None) -> Member:
    """A new user of `role` with one API key."""
    user = await create_user(harness, role, password=password)
    response = await harness.client.post(f"/admin/users/{user['id']}/keys", json={"name": "test"})
    assert response.status_code == 201, response.text
    key = response.json()
    return Member(id=user["id"], email=user["email"], key=key["key"], key_id=key["id"])
