"""OpenAI's protocol: chat completions (text, reasoning_content, tool calls), legacy completions, embeddings."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from .content import (
    EMBED_F32,
    MODEL_CREATED,
    MODELS,
    choose_tool,
    content_text,
    embed_inputs,
    embedding,
    last_user_text,
    prompt_token_count,
    tool_name,
)
from .core import HDR_SSE, MIDWAY, SSE_DONE, ClientWatch, Core, Plan, Receive, Scope, Send

# The model list is serialised once; it is served on every health check and benchmark.
OPENAI_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": "fake"} for m in MODELS],
    }
)
LEGACY_MAX_TOKENS = 16  # what /v1/completions produces at most when max_tokens is not given, as OpenAI's


class OpenAIRequestError(Exception):
    """A request OpenAI would refuse with 400 invalid_request_error, and the parameter at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def stop_sequences(value: Any) -> list[str]:
    """OpenAI's `stop`: null, a string or a list of up to 4 strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return value
    raise OpenAIRequestError("Invalid 'stop': expected a string or an array of at most 4 strings.", "stop")


def function_tools(tools: Any, *, nested: bool) -> list[Mapping[str, Any]]:
    """The function tools of an OpenAI request: chat's {"type", "function": {...}} (`nested`) or the Responses API's."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise OpenAIRequestError("Invalid 'tools': expected an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("type"), str):
            raise OpenAIRequestError(f"Missing required parameter: 'tools[{i}].type'.", f"tools[{i}].type")
        if tool["type"] != "function":
            continue  # hosted and custom tools: the fake model never calls them
        if not tool_name(tool):
            where = f"tools[{i}].function.name" if nested else f"tools[{i}].name"
            raise OpenAIRequestError(f"Missing required parameter: '{where}'.", where)
        out.append(tool)
    return out


def chosen_function(
    tools: Sequence[Mapping[str, Any]], choice: Any, any_tools: bool, last: Any, text: str
) -> Mapping[str, Any] | None:
    """The function tool the model calls, by the fake's rule, given OpenAI's `tool_choice` (chat's or Responses').

    `last` is the last message (or input item); a call is made only after a user turn. `any_tools` says
    whether the request has tools at all (hosted ones included).
    """
    if choice is not None and not any_tools:
        raise OpenAIRequestError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", "tool_choice"
        )
    mode, name = "auto", None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise OpenAIRequestError(
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.", "tool_choice"
            )
        mode = choice
    elif isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "function":
            function = choice.get("function")
            name = str(function.get("name")) if isinstance(function, Mapping) else str(choice.get("name"))
            if name not in {tool_name(t) for t in tools}:
                raise OpenAIRequestError(
                    f"Invalid 'tool_choice': no function named '{name}' in 'tools'.", "tool_choice"
                )
            mode = "required"
        elif kind == "allowed_tools":
            inner = choice.get("allowed_tools", choice)  # chat nests it, the Responses API does not
            allowed = {tool_name(t) for t in inner.get("tools", []) if isinstance(t, Mapping)}
            tools = [t for t in tools if tool_name(t) in allowed]
            mode = "required" if inner.get("mode") == "required" else "auto"
        else:
            mode = "none"  # a hosted or custom tool: never one of the fake's functions
    elif choice is not None:
        raise OpenAIRequestError("Invalid type for 'tool_choice'.", "tool_choice")
    if mode == "none" or not tools or not isinstance(last, Mapping) or last.get("role") != "user":
        return None
    if last.get("type", "message") != "message":
        return None
    return choose_tool(tools, text, required=mode == "required", name=name)


def _usage(plan: Plan) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    }
    if plan.thinking:
        usage["completion_tokens_details"] = {"reasoning_tokens": len(plan.thinking)}
    if plan.spec.cache_reads:
        usage["prompt_tokens_details"] = {"cached_tokens": plan.cached_tokens}
    return usage


def _data(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class OpenAIProtocol(Core):
    """POST /v1/chat/completions, /v1/completions and /v1/embeddings."""

    async def _openai_request(self, scope: Scope, receive: Receive, send: Send) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "request body must be a JSON object", proto="openai")
        return body

    async def _openai_refuse(self, send: Send, exc: OpenAIRequestError) -> None:
        await self._bad_request(send, str(exc), proto="openai", param=exc.param)

    async def _openai_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.chat_requests += 1
        body = await self._openai_request(scope, receive, send)
        if body is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list):
            messages = []
        text = last_user_text(messages)
        last = messages[-1] if messages else None
        try:
            stops = stop_sequences(body.get("stop"))
            tools = function_tools(body.get("tools"), nested=True)
            last_text = content_text(last.get("content")) if isinstance(last, Mapping) else ""
            tool = chosen_function(tools, body.get("tool_choice"), bool(body.get("tools")), last, last_text)
        except OpenAIRequestError as exc:
            await self._openai_refuse(send, exc)
            return
        spec = await self._gate(body, receive, send, proto="openai")
        if spec is None:
            return
        cap = body.get("max_completion_tokens")
        if cap is None:
            cap = body.get("max_tokens")
        think = body.get("reasoning_effort") != "none"
        plan = self._plan(spec, text, prompt_token_count(messages), cap, tool=tool, stops=stops, think=think)
        completion_id = f"chatcmpl-fake{next(self._ids):012d}"
        call_id = f"call_fake{next(self._ids):015d}" if plan.call is not None else ""
        created = int(time.time())
        model = spec.name
        usage = _usage(plan)

        if not body.get("stream"):
            if spec.behaviour in MIDWAY:
                await self._fail_midway(spec, send, receive, b'{"object":"chat.completion","choices":[{"ind', plan)
                return
            if not await self._wait_before_full_response(plan, receive):
                return
            # A tool call comes without text (content null), as OpenAI's do.
            message: dict[str, Any] = {
                "role": "assistant",
                "content": plan.text if plan.tokens or plan.call is None else None,
                "refusal": None,
            }
            if plan.thinking:
                message["reasoning_content"] = plan.thinking_text  # the vLLM / DeepSeek field
            if plan.call is not None:
                function = {"name": plan.call.name, "arguments": plan.call.raw}
                message["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
            result: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}],
            }
            if spec.usage:
                result["usage"] = usage
            await self._send_json(send, 200, orjson.dumps(result))
            self.stats.completion_tokens_served += plan.completion_tokens
            return

        opts = body.get("stream_options")
        include_usage = spec.usage and isinstance(opts, dict) and bool(opts.get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None  # OpenAI sends an explicit null on every chunk but the last
            return _data(obj)

        head: dict[str, Any] | None = None  # the call's first delta: its id, type, name and empty arguments
        if plan.call is not None:
            function = {"name": plan.call.name, "arguments": ""}
            head = {"index": 0, "id": call_id, "type": "function", "function": function}
        if head is not None and not plan.thinking and not plan.tokens:
            # Straight to the call: OpenAI's first chunk opens it, with a null content.
            first = chunk({"role": "assistant", "content": None, "tool_calls": [head]})
        else:
            first = chunk({"role": "assistant", "content": ""})

        def pieces() -> Iterator[bytes]:
            for tok in plan.thinking:
                yield chunk({"reasoning_content": tok})
            for tok in plan.tokens:
                yield chunk({"content": tok})
            if plan.call is not None:
                lead = chunk({"tool_calls": [head]}) if plan.thinking or plan.tokens else b""
                for piece in plan.call.pieces:
                    yield lead + chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                    lead = b""

        watch = ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            await send({"type": "http.response.start", "status": 200, "headers": HDR_SSE})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            if not await self._stream_pieces(pieces(), plan, watch, send, midfail_partial=b'data: {"id'):
                return
            tail = [chunk({}, plan.finish_reason)]
            if include_usage:
                final = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
                tail.append(_data(final))
            tail.append(SSE_DONE)
            await send({"type": "http.response.body", "body": b"".join(tail), "more_body": False})
        finally:
            watch.close()

    async def _openai_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/completions, OpenAI's legacy text completions: the first prompt answered, n=1."""
        self.stats.chat_requests += 1
        body = await self._openai_request(scope, receive, send)
        if body is None:
            return
        raw_prompt = body.get("prompt")
        prompts = embed_inputs(raw_prompt if raw_prompt is not None else "")
        try:
            if not prompts:
                raise OpenAIRequestError(
                    "Invalid 'prompt': expected a string, an array of strings or tokens.", "prompt"
                )
            stops = stop_sequences(body.get("stop"))
            if body.get("n") not in (None, 1):
                raise OpenAIRequestError("The fake upstream answers n=1 only.", "n")
        except OpenAIRequestError as exc:
            await self._openai_refuse(send, exc)
            return
        spec = await self._gate(body, receive, send, proto="openai")
        if spec is None:
            return
        prompt, prompt_tokens = prompts[0]
        cap = body.get("max_tokens")
        plan = self._plan(
            spec, prompt, prompt_tokens, LEGACY_MAX_TOKENS if cap is None else cap, stops=stops, think=False
        )
        echo = prompt if body.get("echo") else ""
        completion_id = f"cmpl-fake{next(self._ids):016d}"
        created = int(time.time())
        usage = _usage(plan)

        def completion(text: str, finish_reason: str | None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": spec.name,
                "system_fingerprint": "fp_fake",
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            }

        if not body.get("stream"):
            if spec.behaviour in MIDWAY:
                await self._fail_midway(spec, send, receive, b'{"object":"text_completion","choices":[{"te', plan)
                return
            if not await self._wait_before_full_response(plan, receive):
                return
            result = completion(echo + plan.text, plan.finish_reason)
            if spec.usage:
                result["usage"] = usage
            await self._send_json(send, 200, orjson.dumps(result))
            self.stats.completion_tokens_served += plan.completion_tokens
            return

        opts = body.get("stream_options")
        include_usage = spec.usage and isinstance(opts, dict) and bool(opts.get("include_usage"))

        def chunk(text: str, finish_reason: str | None = None) -> bytes:
            obj = completion(text, finish_reason)
            if include_usage:
                obj["usage"] = None  # as on chat chunks: null on every chunk but the last
            return _data(obj)

        watch = ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            await send({"type": "http.response.start", "status": 200, "headers": HDR_SSE})
            if echo:
                await send({"type": "http.response.body", "body": chunk(echo), "more_body": True})
            if not await self._stream_tokens(plan, watch, send, chunk, midfail_partial=b'data: {"id'):
                return
            tail = [chunk("", plan.finish_reason)]
            if include_usage:
                final = {**completion("", None), "choices": [], "usage": usage}
                tail.append(_data(final))
            tail.append(SSE_DONE)
            await send({"type": "http.response.body", "body": b"".join(tail), "more_body": False})
        finally:
            watch.close()

    async def _openai_embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.embed_requests += 1
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "request body must be a JSON object", proto="openai")
            return
        inputs = embed_inputs(body.get("input"))
        if inputs is None:
            await self._bad_request(send, "'input' must be a string or a list", proto="openai")
            return
        spec = await self._gate(body, receive, send, proto="openai")
        if spec is None:
            return
        if spec.behaviour in MIDWAY:
            await self._fail_midway(spec, send, receive, b'{"object":"list","data":[{"obj', None)
            return
        n_tokens = sum(n for _, n in inputs)
        self.stats.prompt_tokens += n_tokens
        if self.latency > 0 and not await self._wait_latency(receive):
            return
        as_base64 = body.get("encoding_format") == "base64" and spec.behaviour != "floats"
        data = []
        for i, (text, _) in enumerate(inputs):
            vec = embedding(text)
            emb: Any = base64.b64encode(EMBED_F32.pack(*vec)).decode() if as_base64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        result: dict[str, Any] = {"object": "list", "data": data, "model": spec.name}
        if spec.usage:
            result["usage"] = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        await self._send_json(send, 200, orjson.dumps(result))
