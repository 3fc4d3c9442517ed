"""OpenAI's Responses API (POST /v1/responses), stateless: a Response object, or its typed SSE events.

Shapes from the official ``openai`` package's types (openai/types/responses/): response.py,
response_output_message.py, response_function_tool_call.py, response_reasoning_item.py,
response_usage.py and the events of response_stream_event.py.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from .content import content_text, prompt_token_count
from .core import HDR_SSE, MIDWAY, ClientWatch, Core, Plan, Receive, Scope, Send, sse_event
from .openai_api import OpenAIRequestError, chosen_function, function_tools

_ROLES = frozenset({"user", "assistant", "system", "developer"})


def responses_chat_messages(instructions: Any, input_: Any) -> list[dict[str, str]]:
    """Chat-style view of a Responses request, which the fake counts and answers like an OpenAI chat.

    `instructions` is a first "system" message; a string input is one user message; each message item
    keeps its role and the text of its input_text / output_text parts; a function_call is an assistant
    message without text and a function_call_output a "tool" message with its output; reasoning and
    other items add nothing.
    """
    chat = [{"role": "system", "content": content_text(instructions)}] if instructions else []
    if isinstance(input_, str):
        return [*chat, {"role": "user", "content": input_}]
    for item in input_ if isinstance(input_, list) else ():
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            chat.append({"role": str(item.get("role")), "content": content_text(item.get("content"))})
        elif kind == "function_call":
            chat.append({"role": "assistant", "content": ""})
        elif kind == "function_call_output":
            chat.append({"role": "tool", "content": content_text(item.get("output"))})
    return chat


def _check_input(input_: Any) -> None:
    """Check `input` as OpenAI does: a string or a list of items, each function_call_output answering a call."""
    if isinstance(input_, str):
        return
    if not isinstance(input_, list):
        raise OpenAIRequestError("Invalid type for 'input': expected a string or an array of input items.", "input")
    calls: set[str] = set()
    for i, item in enumerate(input_):
        if not isinstance(item, Mapping):
            raise OpenAIRequestError(f"Invalid type for 'input[{i}]': expected an object.", f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            if item.get("role") not in _ROLES:
                raise OpenAIRequestError(
                    f"Invalid value for 'input[{i}].role': expected 'user', 'assistant', 'system' or 'developer'.",
                    f"input[{i}].role",
                )
            content = item.get("content")
            if not isinstance(content, str | list):
                raise OpenAIRequestError(f"Missing required parameter: 'input[{i}].content'.", f"input[{i}].content")
        elif kind == "function_call":
            for field in ("call_id", "name", "arguments"):
                if not isinstance(item.get(field), str):
                    raise OpenAIRequestError(
                        f"Missing required parameter: 'input[{i}].{field}'.", f"input[{i}].{field}"
                    )
            calls.add(item["call_id"])
        elif kind == "function_call_output" and item.get("call_id") not in calls:
            raise OpenAIRequestError(
                f"No tool call found for function call output with call_id {item.get('call_id')}.", "input"
            )


class ResponsesProtocol(Core):
    """POST /v1/responses: nothing is stored, so previous_response_id is always unknown."""

    async def _responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.chat_requests += 1
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "request body must be a JSON object", proto="openai")
            return
        previous = body.get("previous_response_id")
        if previous is not None:
            message = f"Previous response with id '{previous}' not found."
            payload = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "previous_response_id",
                    "code": "previous_response_not_found",
                }
            }
            await self._send_json(send, 400, orjson.dumps(payload))
            return
        input_ = body.get("input")
        instructions = body.get("instructions")
        chat = responses_chat_messages(instructions, input_)
        text = next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")
        last = input_[-1] if isinstance(input_, list) and input_ else {"role": "user"}
        reasoning = body.get("reasoning")
        try:
            _check_input(input_)
            if instructions is not None and not isinstance(instructions, str):
                raise OpenAIRequestError("Invalid type for 'instructions': expected a string.", "instructions")
            tools = function_tools(body.get("tools"), nested=False)
            last_text = content_text(last.get("content")) if isinstance(last, Mapping) else ""
            if isinstance(input_, str):
                last_text = input_
            tool = chosen_function(tools, body.get("tool_choice"), bool(body.get("tools")), last, last_text)
        except OpenAIRequestError as exc:
            await self._bad_request(send, str(exc), proto="openai", param=exc.param)
            return
        spec = await self._gate(body, receive, send, proto="openai")
        if spec is None:
            return
        think = not (isinstance(reasoning, Mapping) and reasoning.get("effort") == "none")
        cap = body.get("max_output_tokens")
        plan = self._plan(spec, text, prompt_token_count(chat), cap, tool=tool, think=think)
        n = next(self._ids)
        ids = {kind: f"{kind}_fake{n:020d}" for kind in ("resp", "rs", "msg", "fc", "call")}
        created = int(time.time())
        complete = plan.finish_reason != "length"
        item_status = "completed" if complete else "incomplete"
        effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None

        # The output items, finished; a stream sends them as they grow.
        output: list[dict[str, Any]] = []
        reasoning_part = {"type": "reasoning_text", "text": plan.thinking_text}
        text_part = {"type": "output_text", "text": plan.text, "annotations": [], "logprobs": []}
        if plan.thinking:
            status = "completed" if plan.tokens or plan.call is not None or complete else "incomplete"
            output.append(
                {"id": ids["rs"], "type": "reasoning", "summary": [], "content": [reasoning_part], "status": status}
            )
        if plan.tokens or (plan.call is None and not plan.thinking):
            output.append(
                {
                    "id": ids["msg"],
                    "type": "message",
                    "role": "assistant",
                    "status": item_status,
                    "content": [text_part],
                }
            )
        if plan.call is not None:
            output.append(
                {
                    "id": ids["fc"],
                    "type": "function_call",
                    "call_id": ids["call"],
                    "name": plan.call.name,
                    "arguments": plan.call.raw,
                    "status": "completed",
                }
            )

        def response(status: str, items: list[dict[str, Any]]) -> dict[str, Any]:
            done = status != "in_progress"
            usage = None
            if done and spec.usage:
                usage = {
                    "input_tokens": plan.prompt_tokens,
                    "input_tokens_details": {"cached_tokens": plan.cached_tokens, "cache_write_tokens": 0},
                    "output_tokens": plan.completion_tokens,
                    "output_tokens_details": {"reasoning_tokens": len(plan.thinking)},
                    "total_tokens": plan.prompt_tokens + plan.completion_tokens,
                }
            return {
                "id": ids["resp"],
                "object": "response",
                "created_at": created,
                "status": status,
                "background": False,
                "completed_at": created if status == "completed" else None,
                "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                "instructions": instructions,
                "max_output_tokens": cap,
                "max_tool_calls": body.get("max_tool_calls"),
                "model": spec.name,
                "output": items,
                "parallel_tool_calls": body.get("parallel_tool_calls", True),
                "previous_response_id": None,
                "reasoning": {"effort": effort or ("medium" if spec.thinking else None), "summary": None},
                "service_tier": "default",
                "store": body.get("store", True),
                "temperature": body.get("temperature", 1.0),
                "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools", []),
                "top_logprobs": 0,
                "top_p": body.get("top_p", 1.0),
                "truncation": body.get("truncation", "disabled"),
                "usage": usage,
                "user": None,
                "metadata": body.get("metadata") or {},
            }

        final = response("completed" if complete else "incomplete", output)
        if not body.get("stream"):
            if spec.behaviour in MIDWAY:
                await self._fail_midway(
                    spec, send, receive, b'{"id":"' + ids["resp"].encode() + b'","object":"response","crea', plan
                )
                return
            if not await self._wait_before_full_response(plan, receive):
                return
            await self._send_json(send, 200, orjson.dumps(final))
            self.stats.completion_tokens_served += plan.completion_tokens
            return

        head, events, tail = _stream_events(plan, response("in_progress", []), final)
        watch = ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            await send({"type": "http.response.start", "status": 200, "headers": HDR_SSE})
            await send({"type": "http.response.body", "body": head, "more_body": True})
            if not await self._stream_pieces(
                events, plan, watch, send, midfail_partial=b'event: response.output_text.delta\ndata: {"type":"resp'
            ):
                return
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            watch.close()


def _stream_events(plan: Plan, started: dict[str, Any], final: dict[str, Any]) -> tuple[bytes, list[bytes], bytes]:
    """The SSE events of a streamed response: the head, one entry per token, and the tail.

    Each token's delta event goes out with the events that open its item and part (and close the ones before).
    """
    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        return sse_event(kind.encode(), {"type": kind, "sequence_number": next(sequence), **fields})

    head = event("response.created", response=started) + event("response.in_progress", response=started)
    events: list[bytes] = []
    pending = b""

    def token(data: bytes) -> None:
        nonlocal pending
        events.append(pending + data)
        pending = b""

    for index, item in enumerate(final["output"]):
        opened = {**item, "status": "in_progress"}
        where: dict[str, Any] = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            pending += event("response.output_item.added", output_index=index, item={**opened, "arguments": ""})
            for piece in plan.call.pieces if plan.call is not None else ():
                token(event("response.function_call_arguments.delta", **where, delta=piece))
            pending += event("response.function_call_arguments.done", **where, arguments=item["arguments"])
        else:
            reasoning = item["type"] == "reasoning"
            part = item["content"][0]
            tokens: Sequence[str] = plan.thinking if reasoning else plan.tokens
            pending += event("response.output_item.added", output_index=index, item={**opened, "content": []})
            pending += event("response.content_part.added", **where, content_index=0, part={**part, "text": ""})
            for tok in tokens:
                if reasoning:
                    token(event("response.reasoning_text.delta", **where, content_index=0, delta=tok))
                else:
                    token(event("response.output_text.delta", **where, content_index=0, delta=tok, logprobs=[]))
            if reasoning:
                pending += event("response.reasoning_text.done", **where, content_index=0, text=part["text"])
            else:
                pending += event("response.output_text.done", **where, content_index=0, text=part["text"], logprobs=[])
            pending += event("response.content_part.done", **where, content_index=0, part=part)
        pending += event("response.output_item.done", output_index=index, item=item)
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    tail = pending + event(kind, response=final)
    return head, events, tail
