"""What Ollama clients and front-ends call besides chat: `GET /` and `HEAD /`, `/api/show`, `/api/ps` and the legacy
`/api/embeddings`, with the official `ollama` package, against an Ollama and an OpenAI-compatible upstream; and
OpenAI embeddings in the encoding the client asked for, whatever the upstream answers."""

from __future__ import annotations

import base64
import struct
import threading
import time

import httpx
import ollama
import openai
import pytest

from tests.e2e.gateway.test_clients import ollama_client, openai_client
from tests.support.fake_upstream import EMBEDDING_DIM, fake_embedding
from tests.support.server import GatehouseServer


def test_the_root_answers_as_ollama_does(server: GatehouseServer) -> None:
    got = httpx.get(server.url + "/")  # no key: clients probe it before they have one
    assert (got.status_code, got.text) == (200, "Ollama is running")
    assert got.headers["content-type"].startswith("text/plain")
    head = httpx.head(server.url + "/")
    assert head.status_code == 200 and head.content == b""


def test_show_passes_on_an_ollama_upstreams_details(server: GatehouseServer) -> None:
    shown = ollama_client(server).show("ol-chat")
    assert shown.details is not None and shown.details.family == "fake"
    assert shown.modelinfo is not None and shown.modelinfo["fake.context_length"] == 4096
    assert shown.capabilities == ["completion", "tools"]


def test_show_tells_what_gatehouse_knows_of_another_upstreams_model(server: GatehouseServer) -> None:
    client = ollama_client(server)
    chat, embed = client.show("oa-chat"), client.show("oa-embed")
    assert chat.capabilities == ["completion"] and embed.capabilities == ["embedding"]
    assert chat.details is not None and chat.details.family == "up-openai"
    assert chat.modelinfo == {"general.architecture": "gatehouse"}
    assert chat.modified_at is not None


def test_show_of_an_unknown_model_is_ollamas_404(server: GatehouseServer) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client(server).show("no-such-model")
    assert caught.value.status_code == 404 and "no-such-model" in caught.value.error
    with server.client() as client:
        missing = client.post("/api/show", json={})
    assert missing.status_code == 400 and isinstance(missing.json()["error"], str)


def test_ps_lists_the_models_serving_now(server: GatehouseServer) -> None:
    client = ollama_client(server)
    assert "ol-long" not in [m.model for m in client.ps().models]

    def stream() -> None:
        for _ in client.chat(model="ol-long", messages=[{"role": "user", "content": "go"}], stream=True):
            pass

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while (running := [m for m in client.ps().models if m.model == "ol-long"]) == []:
            assert time.monotonic() < deadline, "the model in use never showed"
            time.sleep(0.05)
        assert running[0].size == 0 and running[0].details is not None and running[0].expires_at is not None
    finally:
        thread.join(30)
    deadline = time.monotonic() + 5  # the request leaves the registry as it settles, just after its last byte
    while "ol-long" in [m.model for m in client.ps().models]:
        assert time.monotonic() < deadline, "the model still shows after its request ended"
        time.sleep(0.05)


@pytest.mark.parametrize("model", ["ol-embed", "oa-embed"])
def test_legacy_embeddings(server: GatehouseServer, model: str) -> None:
    client = ollama_client(server)
    vector = client.embeddings(model=model, prompt="hello there").embedding
    assert len(vector) == EMBEDDING_DIM
    assert vector == pytest.approx(fake_embedding("hello there"), abs=1e-6)
    assert client.embeddings(model=model, prompt="").embedding == []  # a load check, as Ollama answers it


def test_embeddings_come_in_the_encoding_asked_for_whatever_the_upstream_answers(server: GatehouseServer) -> None:
    # fake-floats answers floats even when asked for base64; the OpenAI SDK asks for base64 by default and decodes.
    vector = openai_client(server).embeddings.create(model="oa-floats", input="hello").data[0].embedding
    assert vector == pytest.approx(fake_embedding("hello"), abs=1e-6)
    with server.client() as client:
        asked = client.post(
            "/v1/embeddings", json={"model": "oa-floats", "input": "hello", "encoding_format": "base64"}
        ).json()
        floats = client.post("/v1/embeddings", json={"model": "oa-floats", "input": "hello"}).json()
    encoded = asked["data"][0]["embedding"]
    assert isinstance(encoded, str) and asked["model"] == "oa-floats"
    decoded = struct.unpack(f"<{EMBEDDING_DIM}f", base64.b64decode(encoded))
    assert list(decoded) == pytest.approx(fake_embedding("hello"), abs=1e-6)
    assert floats["data"][0]["embedding"] == pytest.approx(fake_embedding("hello"), abs=1e-6)


@pytest.mark.parametrize("dimensions", [0, -3, "8", 2.5, True])
def test_bad_dimensions_are_refused_naming_the_field(server: GatehouseServer, dimensions: object) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(server).embeddings.create(model="oa-embed", input="x", dimensions=dimensions)  # type: ignore[arg-type]
    assert caught.value.body["param"] == "dimensions"  # type: ignore[index]
