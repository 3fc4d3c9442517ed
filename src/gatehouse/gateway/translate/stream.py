"""Stream translators: stateful objects fed one upstream stream object at a time, both directions.

They run once per upstream chunk, so they avoid pydantic and keep allocations to the chunks they must emit.
"""

from __future__ import annotations

from typing import Any

from gatehouse.gateway.translate.common import (
    JSON,
    UpstreamStreamError,
    args_to_object,
    args_to_string,
    rfc3339_now,
)
from gatehouse.gateway.translate.usage import usage_from_ollama

__all__ = ["OllamaToOpenAIStream", "OpenAIToOllamaStream"]


def _error_message(err: Any) -> str:
    """The human message of an upstream error value (string or {"message": ...} object)."""
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


class OllamaToOpenAIStream:
    """Turns Ollama /api/chat stream objects into OpenAI chat.completion.chunk objects."""

    __slots__ = (
        "_call_prefix",
        "_created",
        "_done",
        "_id",
        "_include_usage",
        "_model",
        "_started",
        "_tool_index",
        "_usage",
    )

    def __init__(self, *, model: str, request_id: str, created: int, include_usage: bool) -> None:
        self._id = f"chatcmpl-{request_id}"
        self._call_prefix = f"call_{request_id}_"
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._started = False
        self._done = False
        self._tool_index = 0
        self._usage: tuple[int, int] | None = None

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        chunk: JSON = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def feed(self, event: JSON) -> list[JSON]:
        """Translate one Ollama stream object into zero or more OpenAI chunks."""
        if "error" in event and event["error"] is not None:
            raise UpstreamStreamError(_error_message(event["error"]))
        if self._done:
            return []
        out: list[JSON] = []
        if not self._started:
            self._started = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        msg = event.get("message")
        if msg:
            calls = msg.get("tool_calls")
            content = msg.get("content")
            if calls:
                deltas: list[JSON] = []
                for call in calls:
                    fn = call.get("function") or {}
                    deltas.append(
                        {
                            "index": self._tool_index,
                            "id": call.get("id") or f"{self._call_prefix}{self._tool_index}",
                            "type": "function",
                            "function": {
                                "name": fn.get("name", ""),
                                "arguments": args_to_string(fn.get("arguments")),
                            },
                        }
                    )
                    self._tool_index += 1
                delta: JSON = {"content": content} if content else {}
                delta["tool_calls"] = deltas
                out.append(self._chunk(delta))
            elif content:
                out.append(self._chunk({"content": content}))
        if event.get("done"):
            self._done = True
            if self._tool_index:
                finish = "tool_calls"
            elif event.get("done_reason") == "length":
                finish = "length"
            else:
                finish = "stop"
            out.append(self._chunk({}, finish))
            self._usage = usage_from_ollama(event)
            if self._include_usage and self._usage is not None:
                prompt, completion = self._usage
                out.append(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": completion,
                            "total_tokens": prompt + completion,
                        },
                    }
                )
        return out

    @property
    def done(self) -> bool:
        """Whether the upstream's final (done: true) object has been seen."""
        return self._done

    @property
    def usage(self) -> tuple[int, int] | None:
        """(prompt_tokens, completion_tokens) once the final object reported them, else None."""
        return self._usage


class OpenAIToOllamaStream:
    """Turns OpenAI chat.completion.chunk objects into Ollama /api/chat stream objects."""

    __slots__ = ("_finish_reason", "_model", "_tools", "_usage")

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._finish_reason: str | None = None
        self._usage: tuple[int, int] | None = None
        # index -> [id, name, argument fragments]
        self._tools: dict[int, list[Any]] = {}

    def _flush_tools(self) -> list[JSON]:
        if not self._tools:
            return []
        calls = [
            {
                "function": {
                    "name": name,
                    "arguments": args_to_object("".join(parts), "upstream stream", UpstreamStreamError),
                }
            }
            for _, name, parts in (self._tools[i] for i in sorted(self._tools))
        ]
        self._tools = {}
        return [
            {
                "model": self._model,
                "created_at": rfc3339_now(),
                "message": {"role": "assistant", "content": "", "tool_calls": calls},
                "done": False,
            }
        ]

    def feed(self, chunk: JSON) -> list[JSON]:
        """Translate one OpenAI chunk into zero or more Ollama stream objects (never done: true)."""
        if "error" in chunk and chunk["error"] is not None:
            raise UpstreamStreamError(_error_message(chunk["error"]))
        usage = chunk.get("usage")
        if usage:
            self._usage = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        choices = chunk.get("choices")
        if not choices:
            return []
        choice = choices[0]
        out: list[JSON] = []
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
            if content:
                out.append(
                    {
                        "model": self._model,
                        "created_at": rfc3339_now(),
                        "message": {"role": "assistant", "content": content},
                        "done": False,
                    }
                )
            calls = delta.get("tool_calls")
            if calls:
                tools = self._tools
                for call in calls:
                    index = call.get("index", 0)
                    slot = tools.get(index)
                    if slot is None:
                        slot = tools[index] = [call.get("id"), "", []]
                    fn = call.get("function")
                    if fn:
                        name = fn.get("name")
                        if name:
                            slot[1] = name
                        args = fn.get("arguments")
                        if args:
                            slot[2].append(args)
        finish = choice.get("finish_reason")
        if finish:
            self._finish_reason = finish
            if self._tools:
                out.extend(self._flush_tools())
        return out

    def finish(self) -> list[JSON]:
        """Emit any pending tool calls, then the final done: true object."""
        out = self._flush_tools()
        final: JSON = {
            "model": self._model,
            "created_at": rfc3339_now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "length" if self._finish_reason == "length" else "stop",
            "total_duration": 0,
            "load_duration": 0,
        }
        if self._usage is not None:
            final["prompt_eval_count"] = self._usage[0]
        final["prompt_eval_duration"] = 0
        if self._usage is not None:
            final["eval_count"] = self._usage[1]
        final["eval_duration"] = 0
        out.append(final)
        return out

    @property
    def finish_reason(self) -> str | None:
        """The upstream's finish_reason, once seen."""
        return self._finish_reason

    @property
    def usage(self) -> tuple[int, int] | None:
        """(prompt_tokens, completion_tokens) once the upstream reported usage, else None."""
        return self._usage
