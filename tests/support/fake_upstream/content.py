"""The fake models and what they answer: deterministic words, embeddings and tool inputs, in every protocol."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DEFAULT_TOKENS = 8
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
    behaviour: str = "normal"  # normal | error | hang | midfail
    usage: bool = True


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
    )
}
MIDFAIL_TOKENS = 3


# --------------------------------------------------------------------------------------------------
# Deterministic content. Public so other tests can predict exactly what the upstream will answer.
# --------------------------------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
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


def tool_call_input(tool: Mapping[str, Any], text: str) -> dict[str, Any]:
    """The input the fake model gives `tool` when the last user message is `text`.

    One value per property of the tool's input_schema: the first enum value, else by type a
    number derived from the property name, true, {}, null, [text], or (strings and the rest) `text`.
    """
    schema = tool.get("input_schema")
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
