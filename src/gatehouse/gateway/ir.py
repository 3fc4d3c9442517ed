"""The internal representation every protocol translates to and from.

A client surface (OpenAI chat, Responses, legacy completions, Anthropic Messages, Ollama chat and generate)
decodes its request into a `Request`; an upstream codec (OpenAI-compatible, Ollama, Anthropic) encodes that for
its server, decodes the answer into a `Result` (whole) or `Event`s (streamed), and the surface encodes those
for its client. Adding a protocol adds one codec, not a translator per pair. Same-protocol traffic never comes
here: it is relayed as it is (see `streaming`).

The classes are plain slotted dataclasses: streamed events are made once per upstream chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

JSON = dict[str, Any]

# Why an answer ended, in the representation's words; each codec maps its protocol's own.
StopReason = Literal["end", "length", "tool_use", "stop_sequence", "content_filter"]
Role = Literal["system", "user", "assistant", "tool"]


# --- content ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class Image:
    """Inline (`data`, base64, with its media type) or by `url` (http(s) or a data: URL)."""

    data: str | None = None
    media_type: str = "image/png"
    url: str | None = None


@dataclass(slots=True)
class ToolCall:
    """A call the model made; `arguments` is the JSON text of its input object, as OpenAI carries it."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class ToolResult:
    """What the client's tool answered to the call `call_id` (`name`: the tool's, where the protocol says)."""

    call_id: str
    content: list[Text | Image]
    is_error: bool = False
    name: str = ""


@dataclass(slots=True)
class Reasoning:
    """The model's reasoning ("thinking"): its text, and the opaque proof some providers need it sent back with
    (Anthropic's signature; a redacted block's or a Responses item's encrypted content)."""

    text: str = ""
    signature: str | None = None
    opaque: str | None = None


Part = Text | Image | ToolCall | ToolResult | Reasoning


@dataclass(slots=True)
class Message:
    """One turn. System turns hold Text; tool turns hold one ToolResult each."""

    role: Role
    parts: list[Part]


def text_of(parts: list[Any]) -> str:
    """The text parts of a turn, joined."""
    return "".join(p.text for p in parts if type(p) is Text)


# --- the request -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: JSON | None = None  # a JSON schema of the input object
    strict: bool | None = None


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None  # with mode "tool"


@dataclass(slots=True)
class ResponseFormat:
    """Structured output: any JSON object, or one that follows `schema`."""

    schema: JSON | None = None
    name: str = "response"
    strict: bool | None = None


@dataclass(slots=True)
class ReasoningConfig:
    """How much the model should reason: an effort level (OpenAI) or a token budget (Anthropic), or off."""

    enabled: bool = True
    effort: str | None = None  # minimal, low, medium, high
    budget: int | None = None
    summary: str | None = None  # Responses' reasoning.summary: auto, concise, detailed


@dataclass(slots=True)
class Request:
    """A generation request, whatever protocol it came in."""

    model: str
    messages: list[Message]
    stream: bool = False
    # A raw continuation (legacy completions, Ollama generate with raw): the text to continue, with no chat
    # template; `messages` is then empty. Protocols without one send it as a user turn.
    prompt: str | None = None
    suffix: str | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output: int | None = None
    stop: list[str] = field(default_factory=list)
    # Sampling, in OpenAI's names: temperature, top_p, top_k, seed, presence_penalty, frequency_penalty.
    sampling: JSON = field(default_factory=dict)
    response_format: ResponseFormat | None = None
    reasoning: ReasoningConfig | None = None
    # Optional hints with no field above (cache keys and cache control, metadata, service tier, include lists,
    # beta flags...), by the client protocol's name; each upstream codec maps what it can and reports the rest.
    hints: JSON = field(default_factory=dict)
    # Upstream-specific options that pass only to the same kind of upstream (Ollama's options, keep_alive).
    native: JSON = field(default_factory=dict)


# --- the answer ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """Tokens: `input` counts the whole prompt, cached parts included (OpenAI's convention); `cached` those read
    from a prompt cache, `cache_write` those written to one, `reasoning` the part of `output` spent reasoning."""

    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0

    def pair(self) -> tuple[int, int]:
        return self.input, self.output

    def counts(self) -> tuple[int, int, int]:
        """(input, output, cached): what a request's cost is computed from."""
        return self.input, self.output, self.cached


@dataclass(slots=True)
class Result:
    """A whole answer."""

    parts: list[Part]
    stop: StopReason = "end"
    stop_sequence: str | None = None
    usage: Usage | None = None
    id: str | None = None


# --- streamed events -------------------------------------------------------------------------------


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str = ""
    signature: str | None = None
    opaque: str | None = None


@dataclass(slots=True)
class ToolCallStart:
    """A tool call begins; its arguments follow as ToolArgsDelta with the same index."""

    index: int
    id: str
    name: str


@dataclass(slots=True)
class ToolArgsDelta:
    index: int
    fragment: str


@dataclass(slots=True)
class Finish:
    stop: StopReason
    stop_sequence: str | None = None


Event = TextDelta | ReasoningDelta | ToolCallStart | ToolArgsDelta | Finish

# Events that put something in front of the client (the first one is the time to first token).
CONTENT_EVENTS = (TextDelta, ReasoningDelta, ToolCallStart, ToolArgsDelta)


class Collector:
    """Folds streamed events into whole parts, as they come (a streamed answer that is also stored)."""

    __slots__ = ("calls", "finish", "parts")

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.calls: dict[int, ToolCall] = {}
        self.finish: Finish | None = None

    def add(self, events: list[Event]) -> None:
        parts = self.parts
        for event in events:
            last = parts[-1] if parts else None
            if isinstance(event, TextDelta):
                if isinstance(last, Text):
                    last.text += event.text
                else:
                    parts.append(Text(event.text))
            elif isinstance(event, ReasoningDelta):
                if not isinstance(last, Reasoning):
                    last = Reasoning()
                    parts.append(last)
                last.text += event.text
                if event.signature:
                    last.signature = (last.signature or "") + event.signature
                if event.opaque:
                    last.opaque = event.opaque
            elif isinstance(event, ToolCallStart):
                self.calls[event.index] = call = ToolCall(event.id, event.name, "")
                parts.append(call)
            elif isinstance(event, ToolArgsDelta):
                if (target := self.calls.get(event.index)) is not None:
                    target.arguments += event.fragment
            else:
                self.finish = event


class Decoder(Protocol):
    """An upstream protocol's stream decoder (translate/<protocol>.py): framed lines in, events out."""

    @property
    def usage(self) -> Usage | None: ...

    def feed(self, line: bytes) -> list[Event]: ...


class Encoder(Protocol):
    """A client protocol's stream encoder (translate/<protocol>.py): events in, framed bytes out."""

    media_type: str

    def encode(self, events: list[Event]) -> bytes: ...

    def finish(self, usage: Usage | None) -> bytes: ...

    def ping(self) -> bytes: ...

    def error(self, message: str, code: str) -> bytes: ...
