"""How a front-end's request names its person: the settings that say where, the order (the header first), the
body field of each surface, and what counts as an email."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from starlette.datastructures import Headers

from gatehouse.accounts.acting.errors import InvalidActingUser
from gatehouse.accounts.acting.naming import Named, Naming, email_of
from gatehouse.settings import Settings


def naming(**values: Any) -> Naming:
    return Naming.from_settings(Settings(_env_file=None, **values))  # type: ignore[call-arg]


def test_the_settings_are_validated_and_normalised() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        acts_for_users_header=" X-OpenWebUI-User-Email , X-Gatehouse-User ",
        acts_for_users_sources="Header, metadata",
        acts_for_users_create_domains="Example.com, @example.org",
    )
    assert settings.acts_for_users_header == "X-OpenWebUI-User-Email,X-Gatehouse-User"
    assert settings.acts_for_users_sources == "header,metadata"
    assert settings.acts_for_users_create_domains == "example.com,example.org"
    for field, value, says in (
        ("acts_for_users_header", "X Gatehouse", "ACTS_FOR_USERS_HEADER"),
        ("acts_for_users_header", " , ", "ACTS_FOR_USERS_HEADER"),
        ("acts_for_users_sources", "header,cookie", "ACTS_FOR_USERS_SOURCES"),
        ("acts_for_users_create_domains", "example.com,bob@example.org", "bob@example.org is not an email domain"),
        ("acts_for_users_unnamed", "admin", "acts_for_users_unnamed"),
    ):
        with pytest.raises(ValidationError, match=says):
            Settings(_env_file=None, **{field: value})  # type: ignore[arg-type]


def test_the_header_comes_first_then_the_surface_s_own_field() -> None:
    everything = naming()
    headers = Headers({"x-gatehouse-user": " Alice@Example.com "})
    body = {"user": "bob@example.com", "metadata": {"user_id": "carol@example.com"}}
    assert everything.named(headers, body, "chat") == Named("Alice@Example.com", "the X-Gatehouse-User header")
    assert everything.named(Headers({}), body, "chat") == Named("bob@example.com", "`user`")
    assert everything.named(Headers({}), body, "messages") == Named("carol@example.com", "`metadata.user_id`")
    assert everything.named(Headers({}), body, "ollama_chat") is None  # Ollama's protocol has no such field
    responses = {"user": "bob@example.com", "safety_identifier": "dan@example.com"}
    assert everything.named(Headers({}), responses, "responses") == Named("dan@example.com", "`safety_identifier`")
    # Only a string names someone; a body-less route reads the headers only.
    assert everything.named(Headers({}), {"user": {"id": 1}}, "chat") is None
    assert everything.named(Headers({}), body, None) is None
    assert everything.named(Headers({"x-gatehouse-user": "  "}), body, "embeddings") == Named(
        "bob@example.com", "`user`"
    )


def test_sources_and_header_names_are_configurable() -> None:
    webui = naming(acts_for_users_header="X-OpenWebUI-User-Email", acts_for_users_sources="header")
    body = {"user": "bob@example.com"}
    assert webui.named(Headers({"x-openwebui-user-email": "a@example.com"}), body, "chat") == Named(
        "a@example.com", "the X-OpenWebUI-User-Email header"
    )
    assert webui.named(Headers({"x-gatehouse-user": "a@example.com"}), body, "chat") is None
    assert webui.ways("chat") == "the X-OpenWebUI-User-Email header"
    # A key that does not act for users may send neither the configured header nor X-Gatehouse-User.
    assert webui.refused == ("X-OpenWebUI-User-Email", "X-Gatehouse-User")
    assert webui.refused_header(Headers({"x-gatehouse-user": "a@example.com"})) == "X-Gatehouse-User"
    assert webui.refused_header(Headers({"x-other": "a@example.com"})) is None
    bodies = naming(acts_for_users_sources="user,metadata")
    assert bodies.headers == () and bodies.refused == ("X-Gatehouse-User",)
    assert bodies.ways("messages") == "`metadata.user_id`" and bodies.ways("generate") == ""


@pytest.mark.parametrize("value", ["65f1c0ffee0123456789abcd", "42", "a@b@c", "@example.com", "bob@", "b ob@x.org"])
def test_people_are_named_by_email_only(value: str) -> None:
    with pytest.raises(InvalidActingUser, match="must be the email of the person"):
        email_of(Named(value, "`user`"))


def test_an_email_is_matched_whatever_its_case() -> None:
    assert email_of(Named("Alice@Example.COM", "the X-Gatehouse-User header")) == "alice@example.com"
