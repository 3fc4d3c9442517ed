"""Anthropic's Messages request body (and count_tokens'), as the API reference and the official `anthropic`
package's types (`anthropic/types/message_create_params.py`) declare it. Content blocks of the many kinds Anthropic
keeps adding are objects with a `type`; a text block's text is checked."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, WithJsonSchema

from gatehouse.gateway.schemas.base import AnyObject, Checker, Limit, Model, Open, Probability

TEXT_BLOCK = "text"


class TextBlock(Open):
    type: Literal["text"]
    text: str


class OtherBlock(Open):
    """Any other block (image, document, tool_use, tool_result, thinking...): its fields go to the upstream."""

    type: Annotated[str, WithJsonSchema({"type": "string", "not": {"enum": [TEXT_BLOCK]}})]


def _block_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return TEXT_BLOCK if kind == TEXT_BLOCK else "other"


Block = Annotated[
    Annotated[TextBlock, Tag(TEXT_BLOCK)] | Annotated[OtherBlock, Tag("other")], Discriminator(_block_kind)
]


class Turn(Open):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Field(min_length=1)]


class Metadata(Open):
    user_id: str | None = None


class Tool(Open):
    name: str
    description: str | None = None
    input_schema: AnyObject | None = None
    type: str | None = None


class ToolChoice(Open):
    type: str = Field(description="auto, any, tool or none.")
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Open):
    type: str = Field(description="enabled, disabled or adaptive.")
    budget_tokens: Annotated[int, Field(ge=1)] | None = None


class CountTokensRequest(Open):
    """POST /v1/messages/count_tokens."""

    model: Model
    messages: Annotated[list[Turn], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: AnyObject | None = None


class MessagesRequest(CountTokensRequest):
    """POST /v1/messages."""

    max_tokens: Limit
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Probability | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    top_p: Probability | None = None
    service_tier: str | None = None


_REQUIRED = {
    "model": "Field `model` is required: a model name from GET /v1/models.",
    "messages": "Field `messages` is required: a non-empty list of {role, content} turns.",
}
_HINTS = {
    "messages": "a non-empty list of {role, content} turns",
    "system": "a string or a list of text blocks",
}
check_messages = Checker(
    MessagesRequest,
    {**_REQUIRED, "max_tokens": "Field `max_tokens` is required: the most tokens the answer may have."},
    _HINTS,
)
check_count_tokens = Checker(CountTokensRequest, _REQUIRED, _HINTS)
