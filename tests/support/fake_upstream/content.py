"""The fake models and what they answer: deterministic words, embeddings and tool inputs, in every protocol."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DEFAULT_TOKENS = 8
FLOOD_TOKENS = 8192  # fake-flood: this many tokens ...
FLOOD_TOKEN_CHARS = 4096  # ... of this many characters each (32 MiB of text, sent as fast as it is read)
HUGE_ANSWER_BYTES = 3 * 1024 * 1024  # fake-huge: one JSON value (a whole answer, or one stream line) this large
RETRY_AFTER_SECONDS = 7  # fake-429's Retry-After
THINKING_TOKENS = 6  # fake-think's reasoning, before its answer
EMBEDDING_DIM = 8
# OpenAI-style "created" timestamps for the model list are fixed so responses are byte-stable.
MODEL_CREATED = 1_700_000_000

# 64 words so a token index is just the low 6 bits of the PRNG state.
WORDS: tuple[str, ...] = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "amber", "basil", "cedar", "dune", "ember", "fern",
    "granite", "harbor", "iris", "jasper", "kelp", "lumen", "maple", "nectar",
    "onyx", "pebble", "quartz", "river", "slate", "thistle", "umber", "violet",
    "willow", "yarrow", "zephyr", "acorn", "birch", "clover", "dahlia", "elm",
    "flint", "grove", "heron", "ivy", "juniper", "kestrel", "lark", "moss",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How one fake model behaves."""

    name: str
    token_delay: float = 0.0  # minimum delay before each token; --token-delay wins if larger
    tokens: int | None = None  # completion length; None means --tokens
    # normal | error | hang | midfail | floats | ratelimit | hang-mid | reset | badjson | badframe | huge
    behaviour: str = "normal"
    usage: bool = True
    thinking: int = 0  # reasoning tokens produced before the answer (a reasoning model)
    cache_reads: bool = False  # reports half the prompt (rounded down) as read from a prompt cache
    padding: int = 0  # each reply token padded with dots to this many characters (a large answer, fast)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("fake-chat"),
        ModelSpec("fake-embed"),
        ModelSpec("fake-slow", token_delay=0.05),
        ModelSpec("fake-error", behaviour="error"),
        ModelSpec("fake-hang", behaviour="hang"),
        ModelSpec("fake-midfail", behaviour="midfail"),
        ModelSpec("fake-nousage", usage=False),
        ModelSpec("fake-long", token_delay=0.01, tokens=200),
        ModelSpec("fake-floats", behaviour="floats"),
        ModelSpec("fake-think", thinking=THINKING_TOKENS),
        ModelSpec("fake-cached", cache_reads=True),
        ModelSpec("fake-429", behaviour="ratelimit"),
        ModelSpec("fake-hang-mid", behaviour="hang-mid"),
        ModelSpec("fake-reset", behaviour="reset"),
        ModelSpec("fake-badjson", behaviour="badjson"),
        ModelSpec("fake-badframe", behaviour="badframe"),
        ModelSpec("fake-huge", behaviour="huge"),
        ModelSpec("fake-flood", tokens=FLOOD_TOKENS, padding=FLOOD_TOKEN_CHARS),
    )
}
MIDFAIL_TOKENS = 3  # what fake-midfail and the other mid-answer faults send before they break


# --------------------------------------------------------------------------------------------------
# Deterministic content. Public so other tests can predict exactly what the upstream will answer.
# --------------------------------------------------------------------------------------------------


_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})  # chat's, and the Responses API's


def content_text(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str)
        )
    return ""


def prompt_token_count(messages: Sequence[Any]) -> int:
    """Fake prompt token count: whitespace-separated words of all message contents + 4 per message."""
    total = 0
    for msg in messages:
        if isinstance(msg, dict):
            total += len(content_text(msg.get("content")).split())
        total += 4
    return total


def last_user_text(messages: Sequence[Any]) -> str:
    """Text of the last message whose role is "user" ("" if there is none)."""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return content_text(msg.get("content"))
    return ""


@lru_cache(maxsize=4096)
def reply_tokens(text: str, n: int) -> tuple[str, ...]:
    """The n reply tokens ("word ") the fake model produces for a last user message `text`."""
    # crc32-seeded LCG: cheap, stable across processes (unlike hash()), and cached for benchmarks.
    state = zlib.crc32(text.encode("utf-8", "surrogatepass"))
    out = []
    for _ in range(max(n, 0)):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(WORDS[(state >> 16) & 63] + " ")
    return tuple(out)


def reply_text(messages: Sequence[Any], n: int = DEFAULT_TOKENS) -> str:
    """Full reply content the fake model produces for `messages` with n tokens."""
    return "".join(reply_tokens(last_user_text(messages), n))


def thinking_tokens(text: str, n: int = THINKING_TOKENS) -> tuple[str, ...]:
    """The n reasoning tokens fake-think produces, before its answer, for a last user message `text`."""
    return reply_tokens("thinking about: " + text, n)


def thinking_signature(thinking: str) -> str:
    """The signature of an Anthropic thinking block: opaque, deterministic, base64 as Anthropic's are."""
    digest = hashlib.blake2b(thinking.encode("utf-8", "surrogatepass"), digest_size=48).digest()
    return base64.b64encode(b"fake-signature:" + digest).decode()


_EMBED_STRUCT = struct.Struct(f"<{EMBEDDING_DIM}H")
EMBED_F32 = struct.Struct(f"<{EMBEDDING_DIM}f")


@lru_cache(maxsize=4096)
def embedding(text: str) -> tuple[float, ...]:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=2 * EMBEDDING_DIM).digest()
    # Map each 16-bit chunk into [-1, 1]; rounded so the float32 base64 form round-trips closely.
    return tuple(round(v / 32767.5 - 1.0, 6) for v in _EMBED_STRUCT.unpack(digest))


def fake_embedding(text: str) -> list[float]:
    """Deterministic EMBEDDING_DIM-float embedding of `text`."""
    return list(embedding(text))


def embed_inputs(raw: Any) -> list[tuple[str, int]] | None:
    """Normalise an embeddings `input` to (text, token count) pairs; None if malformed."""
    if isinstance(raw, str):
        return [(raw, len(raw.split()))]
    if not isinstance(raw, list):
        return None
    if raw and all(isinstance(x, int) for x in raw):  # a single token array
        return [(" ".join(map(str, raw)), len(raw))]
    out: list[tuple[str, int]] = []
    for item in raw:
        if isinstance(item, str):
            out.append((item, len(item.split())))
        elif isinstance(item, list) and all(isinstance(x, int) for x in item):
            out.append((" ".join(map(str, item)), len(item)))
        else:
            return None
    return out


TOOL_WORD = re.compile(r"\btools?\b", re.IGNORECASE)


def tool_name(tool: Mapping[str, Any]) -> str:
    """A tool's name in any shape: {"name"} (Anthropic, Responses) or {"function": {"name"}} (chat, Ollama)."""
    function = tool.get("function")
    if isinstance(function, Mapping):
        return str(function.get("name", ""))
    return str(tool.get("name", ""))


def tool_schema(tool: Mapping[str, Any]) -> Any:
    """A tool's JSON schema: input_schema (Anthropic), parameters (Responses), function.parameters (chat, Ollama)."""
    function = tool.get("function")
    if isinstance(function, Mapping):
        return function.get("parameters")
    return tool.get("input_schema", tool.get("parameters"))


def schema_value(schema: Any, text: str) -> dict[str, Any]:
    """The object the fake model makes for a JSON `schema` (an object schema): one value per property.

    The first enum value, else by type a number derived from the property name, true, {}, null,
    [text], or (strings and the rest) `text`.
    """
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    out: dict[str, Any] = {}
    for name, prop in (props if isinstance(props, Mapping) else {}).items():
        spec = prop if isinstance(prop, Mapping) else {}
        kind = spec.get("type")
        seed = zlib.crc32(str(name).encode())
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            out[name] = spec["enum"][0]
        elif kind == "integer":
            out[name] = seed % 100
        elif kind == "number":
            out[name] = seed % 1000 / 10
        elif kind == "boolean":
            out[name] = True
        elif kind == "object":
            out[name] = {}
        elif kind == "null":
            out[name] = None
        elif kind == "array":
            out[name] = [text]
        else:
            out[name] = text
    return out


def tool_call_input(tool: Mapping[str, Any], text: str) -> dict[str, Any]:
    """The input (arguments) the fake model gives `tool` when the last user message is `text`.

    `tool` in any protocol's shape (see :func:`tool_schema`); the value is :func:`schema_value` of its schema.
    """
    return schema_value(tool_schema(tool), text)


def choose_tool(
    tools: Sequence[Mapping[str, Any]], text: str, *, required: bool = False, name: str | None = None
) -> Mapping[str, Any] | None:
    """The tool the fake model calls for a last user message `text`, once the protocol allows a call.

    The tool called `name` if one is forced; else the first tool named in `text`; else, if a call is
    `required` or `text` says "tool" or "tools", the first tool; else none.
    """
    if not tools:
        return None
    if name is not None:
        return next((t for t in tools if tool_name(t) == name), None)
    named = next((t for t in tools if tool_name(t) and tool_name(t) in text), None)
    if named is not None:
        return named
    return tools[0] if required or TOOL_WORD.search(text) else None


def json_pieces(raw: str) -> tuple[str, ...]:
    """`raw` cut into pieces of 1 to 8 characters, anywhere (inside strings and escapes too)."""
    state = zlib.crc32(raw.encode("utf-8", "surrogatepass"))
    pieces = []
    i = 0
    while i < len(raw):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = 1 + (state >> 16) % 8
        pieces.append(raw[i : i + size])
        i += size
    return tuple(pieces)


def cut_at_stop(tokens: tuple[str, ...], stops: Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    """The tokens up to the first stop sequence in their text (left out), and that sequence."""
    text = "".join(tokens)
    found = min(((text.find(s), i) for i, s in enumerate(stops) if s and s in text), default=None)
    if found is None:
        return tokens, None
    cut, which = found
    kept: list[str] = []
    pos = 0
    for tok in tokens:
        if pos >= cut:
            break
        kept.append(tok[: cut - pos])
        pos += len(tok)
    return tuple(kept), stops[which]
