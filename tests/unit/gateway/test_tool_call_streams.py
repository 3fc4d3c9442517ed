"""Streamed tool calls survive every translation: generated calls (names, argument objects) cut at generated
chunk boundaries in each upstream protocol, decoded and re-encoded for each client protocol, arrive with
arguments equal to what the upstream sent, and every client event validates against the official SDK's types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gatehouse.gateway import ir
from gatehouse.gateway.translate import anthropic, ollama, openai, responses

JSON = dict[str, Any]
ANTHROPIC_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
RESPONSES_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)

names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=30)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(min_size=1, max_size=10), values, max_size=4)
calls = st.lists(st.tuples(names, arguments), min_size=1, max_size=3)


def cut(text: str, cuts: list[int]) -> list[str]:
    """`text` in pieces at the given (sorted, deduplicated) positions."""
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(text)]:
        if point > last:
            pieces.append(text[last:point])
            last = point
    return pieces


# --- upstream streams, as each protocol sends them ---------------------------------------------------


def openai_stream(tool_calls: list[tuple[str, JSON]], cuts: list[int]) -> list[bytes]:
    def chunk(delta: JSON, finish: str | None = None) -> bytes:
        body = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(body)

    lines = [chunk({"role": "assistant", "content": ""})]
    for index, (name, args) in enumerate(tool_calls):
        lines.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": f"call_{index}",
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in cut(orjson.dumps(args).decode(), cuts):
            lines.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    lines.append(chunk({}, "tool_calls"))
    lines.append(
        b"data: "
        + orjson.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            }
        )
    )
    lines.append(b"data: [DONE]")
    return lines


def anthropic_stream(tool_calls: list[tuple[str, JSON]], cuts: list[int]) -> list[bytes]:
    def event(data: JSON) -> bytes:
        return b"data: " + orjson.dumps(data)

    lines = [
        event(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "m",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 3, "output_tokens": 1},
                },
            }
        )
    ]
    for index, (name, args) in enumerate(tool_calls):
        lines.append(
            event(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": f"toolu_{index}", "name": name, "input": {}},
                }
            )
        )
        for piece in cut(orjson.dumps(args).decode(), cuts):
            lines.append(
                event(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                )
            )
        lines.append(event({"type": "content_block_stop", "index": index}))
    lines.append(
        event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 4},
            }
        )
    )
    lines.append(event({"type": "message_stop"}))
    return lines


def ollama_stream(tool_calls: list[tuple[str, JSON]], cuts: list[int]) -> list[bytes]:
    del cuts  # Ollama sends each call whole
    calls = [{"function": {"name": name, "arguments": args}} for name, args in tool_calls]
    return [
        orjson.dumps(
            {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False}
        ),
        orjson.dumps(
            {
                "model": "m",
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 3,
                "eval_count": 4,
            }
        ),
    ]


UPSTREAMS = {
    "openai": (openai_stream, lambda: openai.ChatDecoder()),
    "anthropic": (anthropic_stream, lambda: anthropic.SseDecoder()),
    "ollama": (ollama_stream, lambda: ollama.NdjsonDecoder(call_prefix="call_r_")),
}


# --- client streams, read back as a client would -----------------------------------------------------


def read_chat(output: bytes) -> list[tuple[str, JSON]]:
    found: dict[int, list[Any]] = {}
    for line in output.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = ChatCompletionChunk.model_validate(orjson.loads(line[6:]))
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                slot = found.setdefault(call.index, ["", ""])
                if call.function and call.function.name:
                    slot[0] = call.function.name
                if call.function and call.function.arguments:
                    slot[1] += call.function.arguments
    return [(name, orjson.loads(args)) for name, args in (found[i] for i in sorted(found))]


def read_anthropic(output: bytes) -> list[tuple[str, JSON]]:
    blocks: dict[int, list[Any]] = {}
    for line in output.split(b"\n"):
        if not line.startswith(b"data: "):
            continue
        data = orjson.loads(line[6:])
        if data["type"] == "ping":  # the SDK reads pings apart from the typed events
            continue
        event = ANTHROPIC_EVENT.validate_python(data)
        if event.type == "content_block_start" and event.content_block.type == "tool_use":
            blocks[event.index] = [event.content_block.name, ""]
        elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            blocks[event.index][1] += event.delta.partial_json
    return [(name, orjson.loads(args or "{}")) for name, args in (blocks[i] for i in sorted(blocks))]


def read_ollama(output: bytes) -> list[tuple[str, JSON]]:
    found = []
    for line in output.split(b"\n"):
        if line:
            message = orjson.loads(line).get("message") or {}
            found.extend((c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or ())
    return found


def read_responses(output: bytes) -> list[tuple[str, JSON]]:
    deltas: dict[str, str] = {}
    done: list[tuple[str, JSON]] = []
    for line in output.split(b"\n"):
        if not line.startswith(b"data: "):
            continue
        event = RESPONSES_EVENT.validate_python(orjson.loads(line[6:]))
        if event.type == "response.function_call_arguments.delta":
            deltas[event.item_id] = deltas.get(event.item_id, "") + event.delta
        elif event.type == "response.output_item.done" and event.item.type == "function_call":
            item = event.item
            assert deltas.get(item.id or "", "") == item.arguments  # the deltas add up to the whole
            done.append((item.name, orjson.loads(item.arguments)))
    return done


CLIENTS = {
    "chat": (lambda: openai.ChatEncoder(model="m", response_id="chatcmpl-1", created=1, include_usage=True), read_chat),
    "messages": (lambda: anthropic.SseEncoder(model="m", message_id="msg_1"), read_anthropic),
    "ollama": (lambda: ollama.NdjsonEncoder(model="m"), read_ollama),
    "responses": (lambda: responses.StreamEncoder(responses.Render({"model": "m"}, "m")), read_responses),
}


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tool_calls=calls, cuts=st.lists(st.integers(0, 400), max_size=12), batch=st.integers(1, 4))
def test_streamed_tool_calls_arrive_intact(
    upstream: str, client: str, tool_calls: list[tuple[str, JSON]], cuts: list[int], batch: int
) -> None:
    make_stream, make_decoder = UPSTREAMS[upstream]
    make_encoder, read = CLIENTS[client]
    decoder, encoder = make_decoder(), make_encoder()
    lines = make_stream(tool_calls, cuts)
    output = b""
    for start in range(0, len(lines), batch):  # lines that arrive together are translated together
        events: list[ir.Event] = []
        for line in lines[start : start + batch]:
            events.extend(decoder.feed(line))
        output += encoder.encode(events)
    output += encoder.finish(decoder.usage)
    assert read(output) == [(name, args) for name, args in tool_calls]
    assert decoder.usage is not None and decoder.usage.pair() == (3, 4)
