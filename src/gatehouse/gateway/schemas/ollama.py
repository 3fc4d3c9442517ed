"""Ollama's request bodies (/api/chat, /api/generate, /api/embed, /api/embeddings, /api/show), as Ollama's API
docs and the official `ollama` package's `_types.py` declare them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gatehouse.gateway.schemas.base import INTEGRAL, MAX_INT, MAX_ITEMS, AnyObject, Checker, Int, Limit, Model, Open

Images = list[str]  # base64, without a data: prefix
KeepAlive = float | str  # seconds, or a duration such as "5m"
Think = bool | Literal["low", "medium", "high"]


class Options(Open):
    """Model options (any of Ollama's; these are checked)."""

    num_predict: Annotated[int, Field(ge=-2, le=MAX_INT), INTEGRAL] | None = None
    num_ctx: Annotated[int, Field(ge=1), INTEGRAL] | None = None
    temperature: float | None = None
    top_k: Int | None = None
    top_p: float | None = None
    seed: Int | None = None
    stop: list[str] | None = None


class ToolCallFunction(Open):
    name: str
    arguments: AnyObject | None = None


class ToolCall(Open):
    function: ToolCallFunction


class Message(Open):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    thinking: str | None = None
    images: Images | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None


class FunctionDefinition(Open):
    name: str
    description: str | None = None
    parameters: AnyObject | None = None


class Tool(Open):
    type: str | None = None
    function: FunctionDefinition


class _Generation(Open):
    model: Model
    format: Literal["", "json"] | AnyObject | None = None
    options: Options | None = None
    stream: bool | None = None
    keep_alive: KeepAlive | None = None
    think: Think | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), INTEGRAL] | None = None


class ChatRequest(_Generation):
    """POST /api/chat."""

    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_ITEMS)]
    tools: list[Tool] | None = None


class GenerateRequest(_Generation):
    """POST /api/generate (no prompt and no images: the model is only loaded)."""

    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[Int] | None = None
    raw: bool | None = None
    images: Images | None = None


class EmbedRequest(Open):
    """POST /api/embed."""

    model: Model
    input: str | Annotated[list[str], Field(min_length=1, max_length=MAX_ITEMS)]
    truncate: bool | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    dimensions: Limit | None = None


class EmbeddingsRequest(Open):
    """POST /api/embeddings (legacy: one prompt, one vector; an empty prompt only checks the model)."""

    model: Model
    prompt: str | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class ShowRequest(Open):
    """POST /api/show (`name`: what older clients send instead of `model`)."""

    model: Model | None = None
    name: Model | None = None
    verbose: bool | None = None


MODEL_REQUIRED = "Field `model` is required: a model name from GET /api/tags."
check_chat = Checker(
    ChatRequest,
    {
        "model": MODEL_REQUIRED,
        "messages": "Field `messages` is required: a non-empty list of {role, content} objects.",
    },
    longest={"messages": MAX_ITEMS},
)
check_generate = Checker(GenerateRequest, {"model": MODEL_REQUIRED}, {"format": '"json" or a JSON schema object'})
check_embed = Checker(
    EmbedRequest,
    {"model": MODEL_REQUIRED, "input": "Field `input` is required: a string or a list of strings."},
    {"input": "a string or a list of strings"},
    longest={"input": MAX_ITEMS},
)
check_embeddings = Checker(EmbeddingsRequest, {"model": MODEL_REQUIRED})
check_show = Checker(ShowRequest, {"model": MODEL_REQUIRED})


def show_extra(schema: dict[str, object]) -> None:
    """/api/show needs `model` (or, from older clients, `name`)."""
    named = {"type": "string", "pattern": r"\S"}
    schema["anyOf"] = [
        {"required": ["model"], "properties": {"model": named}},
        {"required": ["name"], "properties": {"name": named}},
    ]
