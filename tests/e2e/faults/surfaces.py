"""The client surfaces of the matrix, each called with its official client (`openai`, `anthropic`, `ollama`).

A call returns what the client received (the answer's text) and raises the client's own error type when the
gateway answers an error, or when a stream ends with its protocol's error event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import ollama
import openai

from tests.support.server import GatehouseServer

PROMPT = "Tell me a story"
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
MAX_TOKENS = 64
CLIENT_TIMEOUT = 30.0


class StreamFailed(Exception):
    """A Responses stream ended with its error event (`error`, then `response.failed`): the openai client yields
    those events rather than raising, so the call raises this with the event's code and message."""

    def __init__(self, code: str, message: str, received: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.received = received


class Truncated(Exception):
    """A stream ended without its protocol's final event: a truncated success, which the matrix forbids."""

    def __init__(self, received: str) -> None:
        super().__init__(f"the stream ended without its final event after {received!r}")
        self.received = received


@dataclass
class Received:
    """What one call got: its text, and the pieces (one per streamed token) it came in."""

    text: str = ""
    pieces: list[str] = field(default_factory=list)

    def add(self, piece: str | None) -> None:
        if piece:
            self.pieces.append(piece)
            self.text += piece


def _openai(server: GatehouseServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin_key, max_retries=0, timeout=CLIENT_TIMEOUT)


def _anthropic(server: GatehouseServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.admin_key, max_retries=0, timeout=CLIENT_TIMEOUT)


def _ollama(server: GatehouseServer) -> ollama.Client:
    return ollama.Client(
        host=server.url, headers={"authorization": f"Bearer {server.admin_key}"}, timeout=CLIENT_TIMEOUT
    )


def chat(server: GatehouseServer, model: str, stream: bool, got: Received) -> None:
    with _openai(server) as client:
        if not stream:
            answer = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS)
            got.add(answer.choices[0].message.content)
            return
        finished = False
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True):
            if chunk.choices:
                got.add(chunk.choices[0].delta.content)
                finished = finished or chunk.choices[0].finish_reason is not None
        if not finished:
            raise Truncated(got.text)


def completions(server: GatehouseServer, model: str, stream: bool, got: Received) -> None:
    with _openai(server) as client:
        if not stream:
            answer = client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS)
            got.add(answer.choices[0].text)
            return
        finished = False
        for chunk in client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, stream=True):
            if chunk.choices:
                got.add(chunk.choices[0].text)
                finished = finished or chunk.choices[0].finish_reason is not None
        if not finished:
            raise Truncated(got.text)


def responses(server: GatehouseServer, model: str, stream: bool, got: Received) -> None:
    with _openai(server) as client:
        if not stream:
            answer = client.responses.create(model=model, input=PROMPT, max_output_tokens=MAX_TOKENS)
            got.add(answer.output_text)
            return
        error: Any = None
        completed = False
        for event in client.responses.create(model=model, input=PROMPT, max_output_tokens=MAX_TOKENS, stream=True):
            if event.type == "response.output_text.delta":
                got.add(event.delta)
            elif event.type == "error":
                error = event
            elif event.type == "response.failed" and error is not None:
                raise StreamFailed(str(error.code), error.message, got.text)
            elif event.type in ("response.completed", "response.incomplete"):
                completed = True
        if not completed:
            raise Truncated(got.text)


def messages(server: GatehouseServer, model: str, stream: bool, got: Received) -> None:
    with _anthropic(server) as client:
        if not stream:
            answer = client.messages.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS)
            got.add("".join(block.text for block in answer.content if block.type == "text"))
            return
        stopped = False
        for event in client.messages.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True):
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                got.add(event.delta.text)
            stopped = stopped or event.type == "message_stop"
        if not stopped:
            raise Truncated(got.text)


def ollama_chat(server: GatehouseServer, model: str, stream: bool, got: Received) -> None:
    client = _ollama(server)
    options = {"num_predict": MAX_TOKENS}
    if not stream:
        got.add(client.chat(model=model, messages=MESSAGES, options=options).message.content)
        return
    done = False
    for part in client.chat(model=model, messages=MESSAGES, options=options, stream=True):
        got.add(part.message.content)
        done = done or bool(part.done)
    if not done:
        raise Truncated(got.text)


def generate(server: GatehouseServer, model: str, stream: bool, got: Received) -> None:
    client = _ollama(server)
    options = {"num_predict": MAX_TOKENS}
    if not stream:
        got.add(client.generate(model=model, prompt=PROMPT, options=options).response)
        return
    done = False
    for part in client.generate(model=model, prompt=PROMPT, options=options, stream=True):
        got.add(part.response)
        done = done or bool(part.done)
    if not done:
        raise Truncated(got.text)


def embeddings(server: GatehouseServer, model: str, stream: bool, got: Received) -> None:
    with _openai(server) as client:
        answer = client.embeddings.create(model=model, input=PROMPT)
        got.add(f"{len(answer.data)} vector")


def embed(server: GatehouseServer, model: str, stream: bool, got: Received) -> None:
    answer = _ollama(server).embed(model=model, input=PROMPT)
    got.add(f"{len(answer.embeddings)} vector")


Call = Callable[[GatehouseServer, str, bool, Received], None]


@dataclass(frozen=True)
class Surface:
    """One client surface: the upstream kind that serves it natively, whether it streams, how its client calls."""

    name: str
    kind: str
    stream: bool
    call: Call
    client: str  # openai | anthropic | ollama

    @property
    def embedding(self) -> bool:
        return self.call in (embeddings, embed)

    def __str__(self) -> str:
        return self.name


def _both(name: str, kind: str, call: Call, client: str) -> list[Surface]:
    return [Surface(name, kind, False, call, client), Surface(f"{name}-stream", kind, True, call, client)]


SURFACES: list[Surface] = [
    *_both("chat", "openai", chat, "openai"),
    *_both("completions", "openai", completions, "openai"),
    *_both("responses", "responses", responses, "openai"),
    *_both("messages", "anthropic", messages, "anthropic"),
    *_both("ollama-chat", "ollama", ollama_chat, "ollama"),
    *_both("generate", "ollama", generate, "ollama"),
    Surface("embeddings", "openai", False, embeddings, "openai"),
    Surface("embed", "ollama", False, embed, "ollama"),
]
