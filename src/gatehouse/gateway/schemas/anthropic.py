"""Anthropic's Messages request body (and count_tokens'), as the API reference and the official `anthropic`
package's types (`anthropic/types/message_create_params.py`) declare it. Content blocks of the many kinds Anthropic
are a union on `type` (each with the fields Anthropic requires of it); which role may hold which block, and that
each tool_use is answered, are left to the upstream."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, WithJsonSchema

from gatehouse.gateway.schemas.base import (
    INTEGRAL,
    MAX_ITEMS,
    NOT_SENT,
    AnyObject,
    Checker,
    Limit,
    Model,
    Open,
    Probability,
)


class TextBlock(Open):
    type: Literal["text"]
    text: str


class Source(Open):
    type: str = Field(description="base64, url or file (text or content for documents).")


class ImageBlock(Open):
    type: Literal["image"]
    source: Source


class DocumentBlock(Open):
    type: Literal["document"]
    source: Source


class ToolUseBlock(Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: AnyObject


class ToolResultPart(Open):
    type: Literal["text", "image", "document", "search_result"]


class ToolResultBlock(Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultPart] = NOT_SENT
    is_error: bool = NOT_SENT


class ThinkingBlock(Open):
    type: Literal["thinking"]
    thinking: str
    signature: str = NOT_SENT


class RedactedThinkingBlock(Open):
    type: Literal["redacted_thinking"]
    data: str


class ServerBlock(Open):
    """A block of Anthropic's server tools (search results, web search and fetch, code execution, containers,
    MCP): its fields go to the upstream as they are."""

    type: Literal[
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "mcp_tool_use",
        "mcp_tool_result",
    ]


_SERVER_BLOCKS = frozenset(ServerBlock.model_fields["type"].annotation.__args__)  # type: ignore[union-attr]


def _block_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str):
        return None
    return "server" if kind in _SERVER_BLOCKS else kind


Block = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[ServerBlock, Tag("server")],
    Discriminator(_block_kind),
]


class Turn(Open):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Field(min_length=1)]


class Metadata(Open):
    user_id: str | None = None


class CustomTool(Open):
    """A tool of the caller's own (its `type`, when sent, is "custom")."""

    type: Literal["custom"] = NOT_SENT
    name: str
    description: str = NOT_SENT
    input_schema: AnyObject


class ServerTool(Open):
    """One of Anthropic's own tools (web search, code execution, bash...), named by its versioned `type`."""

    type: Annotated[str, WithJsonSchema({"type": "string", "not": {"const": "custom"}})]
    name: str


def _tool_kind(value: Any) -> str:
    kind = value.get("type", "custom") if isinstance(value, dict) else None
    return "custom" if kind == "custom" else "server"


Tool = Annotated[Annotated[CustomTool, Tag("custom")] | Annotated[ServerTool, Tag("server")], Discriminator(_tool_kind)]


class ToolChoice(Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Open):
    type: str = Field(description="enabled, disabled or adaptive.")
    budget_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = None


class CountTokensRequest(Open):
    """POST /v1/messages/count_tokens."""

    model: Model
    messages: Annotated[list[Turn], Field(min_length=1, max_length=MAX_ITEMS)]
    system: str | list[TextBlock] = NOT_SENT
    tools: list[Tool] = NOT_SENT
    tool_choice: ToolChoice = NOT_SENT
    thinking: Thinking = NOT_SENT
    output_config: AnyObject = NOT_SENT


class MessagesRequest(CountTokensRequest):
    """POST /v1/messages."""

    max_tokens: Limit
    metadata: Metadata = NOT_SENT
    stop_sequences: list[str] = NOT_SENT
    stream: bool = NOT_SENT
    temperature: Probability = NOT_SENT
    top_k: Annotated[int, Field(ge=0), INTEGRAL] = NOT_SENT
    top_p: Probability = NOT_SENT
    service_tier: str = NOT_SENT


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
    longest={"messages": MAX_ITEMS},
)
check_count_tokens = Checker(CountTokensRequest, _REQUIRED, _HINTS, longest={"messages": MAX_ITEMS})
