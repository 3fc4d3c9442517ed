"""OpenAI's request bodies (chat completions, legacy completions, Responses, embeddings), as the API reference and
the official `openai` package's types (`openai/types/chat/completion_create_params.py`...) declare them. Only the
documented fields are declared; any other passes through to the upstream. Enumerations that OpenAI extends often
(service tiers, reasoning efforts) are plain strings, so a new value is not refused here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from gatehouse.gateway.schemas.base import (
    INTEGRAL,
    MAX_INT,
    MAX_ITEMS,
    NOT_SENT,
    AnyObject,
    Checker,
    Int,
    Limit,
    Model,
    Open,
    Penalty,
    Probability,
    StrMap,
    Temperature,
)

Stop = str | list[str]
EMBED_ITEMS = 2048  # OpenAI's limit on the inputs of one embeddings request
# max_tokens as the gateway has always taken it: -1 and -2 are Ollama's "no limit" and "fill the context".
TokenLimit = Annotated[int, Field(ge=-2, le=MAX_INT), INTEGRAL]
TopLogprobs = Annotated[int, Field(ge=0, le=20), INTEGRAL]
Choices = Annotated[int, Field(ge=1, le=128), INTEGRAL]


class StreamOptions(Open):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# --- chat messages -----------------------------------------------------------------------------------


class TextPart(Open):
    type: Literal["text"]
    text: str


class ImageUrl(Open):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Open):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(Open):
    data: str
    format: str


class AudioPart(Open):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(Open):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(Open):
    type: Literal["file"]
    file: FileRef


class RefusalPart(Open):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[TextPart | ImagePart | AudioPart | FilePart | RefusalPart, Field(discriminator="type")]


class FunctionCall(Open):
    name: str
    arguments: str


class ToolCall(Open):
    id: str
    type: str = Field(description='"function" (or "custom").')
    function: FunctionCall | None = None


class ChatMessage(Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str = NOT_SENT
    tool_calls: list[ToolCall] = NOT_SENT
    tool_call_id: str | None = None
    refusal: str | None = None


class FunctionDefinition(Open):
    name: str
    description: str | None = None
    parameters: AnyObject | None = None
    strict: bool | None = None


class Tool(Open):
    type: str = Field(description='"function" (or "custom").')
    function: FunctionDefinition | None = None


class JsonSchemaFormat(Open):
    name: str = NOT_SENT
    description: str | None = None
    schema_: AnyObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(Open):
    type: Literal["text"]


class JsonObjectFormat(Open):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(Open):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class _Sampling(Open):
    """What chat and legacy completions share."""

    model: Model
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: dict[str, Int] | None = None
    max_tokens: TokenLimit | None = None
    n: Choices | None = None
    seed: Int | None = None
    stop: Stop | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    user: str = NOT_SENT


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_ITEMS)]
    max_completion_tokens: TokenLimit | None = None
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None
    metadata: StrMap | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    parallel_tool_calls: bool = NOT_SENT
    reasoning_effort: str | None = None
    response_format: ResponseFormat = NOT_SENT
    service_tier: str | None = None
    store: bool | None = None
    tools: list[Tool] = NOT_SENT
    tool_choice: Literal["none", "auto", "required"] | AnyObject = NOT_SENT


class CompletionRequest(_Sampling):
    """POST /v1/completions (legacy): a prompt continued."""

    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_ITEMS)]
        | Annotated[list[Int], Field(max_length=MAX_ITEMS)]
        | Annotated[list[list[Int]], Field(max_length=MAX_ITEMS)]
    )
    best_of: Annotated[int, Field(ge=1, le=20), INTEGRAL] | None = None
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=5), INTEGRAL] | None = None
    suffix: str | None = None


class ResponsesRequest(Open):
    """POST /v1/responses: `input`, or `previous_response_id` to continue a stored conversation (or both)."""

    model: Model
    input: str | Annotated[list[AnyObject], Field(max_length=MAX_ITEMS)] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    max_output_tokens: Limit | None = None
    max_tool_calls: Limit | None = None
    metadata: StrMap | None = None
    parallel_tool_calls: bool = NOT_SENT
    reasoning: AnyObject | None = None
    service_tier: str | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_logprobs: TopLogprobs | None = None
    text: AnyObject = NOT_SENT
    tools: list[Tool] = NOT_SENT
    tool_choice: str | AnyObject = NOT_SENT
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    background: bool | None = None
    user: str = NOT_SENT


# A token id: a vocabulary index, never negative (a number beyond it names no token).
TokenId = Annotated[int, Field(ge=0, le=MAX_INT), INTEGRAL]


class EmbeddingsRequest(Open):
    """POST /v1/embeddings."""

    model: Model
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=EMBED_ITEMS)]
        | Annotated[list[TokenId], Field(min_length=1, max_length=EMBED_ITEMS)]
        | Annotated[list[list[TokenId]], Field(min_length=1, max_length=EMBED_ITEMS)]
    )
    dimensions: Limit = NOT_SENT
    encoding_format: Literal["float", "base64"] = NOT_SENT
    user: str = NOT_SENT


MODEL_REQUIRED = "Field `model` is required: a model name from GET /v1/models."
EMBED_INPUT = "a string, a non-empty list of strings, or token arrays"
check_chat = Checker(
    ChatCompletionRequest,
    {
        "model": MODEL_REQUIRED,
        "messages": "Field `messages` is required: a non-empty list of {role, content} objects.",
    },
    {"messages": "a non-empty list of {role, content} objects"},
    longest={"messages": MAX_ITEMS},
)
check_completions = Checker(
    CompletionRequest,
    {"model": MODEL_REQUIRED, "prompt": "Field `prompt` is required: the text to continue."},
    {"prompt": "a string, a non-empty list of strings, or token arrays"},
    longest={"prompt": MAX_ITEMS},
)
check_responses = Checker(
    ResponsesRequest,
    {"model": MODEL_REQUIRED},
    {"input": "a string or a list of item objects"},
    longest={"input": MAX_ITEMS},
)
check_embeddings = Checker(
    EmbeddingsRequest,
    {"model": MODEL_REQUIRED, "input": f"Field `input` is required: {EMBED_INPUT}."},
    {"input": EMBED_INPUT},
    longest={"input": EMBED_ITEMS},
)


def responses_extra(schema: dict[str, Any]) -> None:
    """The Responses body needs `input` or `previous_response_id`."""
    schema["anyOf"] = [
        {"required": ["input"], "properties": {"input": {"type": ["string", "array"]}}},
        {
            "required": ["previous_response_id"],
            "properties": {"previous_response_id": {"type": "string", "minLength": 1}},
        },
    ]
