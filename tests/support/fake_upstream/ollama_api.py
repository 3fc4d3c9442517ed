"""Ollama's protocol: chat (thinking, tool calls), generate (thinking, context), embed, embeddings and show."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from .content import (
    MODELS,
    choose_tool,
    content_text,
    embed_inputs,
    embedding,
    json_pieces,
    last_user_text,
    prompt_token_count,
    reply_tokens,
    schema_value,
    tool_name,
)
from .core import HDR_NDJSON, MIDWAY, ClientWatch, Core, Receive, Scope, Send, iso_now

# Static answers are serialised once; they are served on every health check and benchmark.
TAGS_BODY = orjson.dumps(
    {
        "models": [
            {
                "name": m,
                "model": m,
                "modified_at": "2024-01-01T00:00:00Z",
                "size": 1000,
                "digest": hashlib.sha256(m.encode()).hexdigest(),
                "details": {
                    "format": "gguf",
                    "family": "fake",
                    "families": ["fake"],
                    "parameter_size": "1B",
                    "quantization_level": "Q4_0",
                },
            }
            for m in MODELS
        ]
    }
)
VERSION_BODY = orjson.dumps({"version": "0.5.0"})
_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _image_error(images: Iterable[Any]) -> str | None:
    """What Ollama says of images that are not base64 (each message's, or a generate request's), if any."""
    for group in images:
        for image in group if isinstance(group, list) else ():
            if not isinstance(image, str):
                return "json: cannot unmarshal image data: expected a base64 string"
            try:
                base64.b64decode(image, validate=True)
            except ValueError:
                bad = next((i for i, c in enumerate(image) if c not in _BASE64_ALPHABET), len(image))
                return f"illegal base64 data at input byte {bad}"
    return None


def _format_error(fmt: Any) -> str | None:
    if fmt in (None, "", "json") or isinstance(fmt, dict):
        return None
    return f'invalid format: {json.dumps(fmt)}; expected "json" or a valid JSON Schema'


def _token_ids(text: str) -> list[int]:
    """Fake token ids of `text`, one per word, as /api/generate's `context` carries them."""
    return [zlib.crc32(word.encode("utf-8", "surrogatepass")) % 32000 + 1 for word in text.split()]


class OllamaProtocol(Core):
    """POST /api/chat, /api/generate, /api/embed, /api/embeddings and /api/show."""

    async def _ollama_show(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Ollama's model details, in the shape of its /api/show."""
        body = await self._read_body(scope, receive)
        model = (body or {}).get("model") or (body or {}).get("name")
        spec = MODELS.get(model) if isinstance(model, str) else None
        if spec is None:
            await self._send_json(send, 404, orjson.dumps({"error": f"model '{model}' not found"}))
            return
        embeds = "embed" in spec.name or spec.behaviour == "floats"
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": "fake",
            "families": ["fake"],
            "parameter_size": "1B",
            "quantization_level": "Q4_0",
        }
        answer = {
            "modelfile": f"# fake upstream model {spec.name}\nFROM {spec.name}\n",
            "parameters": "num_ctx 4096",
            "template": "{{ .Prompt }}",
            "details": details,
            "model_info": {"general.architecture": "fake", "fake.context_length": 4096},
            "capabilities": ["embedding"]
            if embeds
            else ["completion", "tools", *(["thinking"] if spec.thinking else [])],
            "modified_at": "2026-01-01T00:00:00Z",
        }
        await self._send_json(send, 200, orjson.dumps(answer))

    async def _ollama_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Serves /api/chat and /api/generate; they differ only in where the text lives.
        self.stats.chat_requests += 1
        start_ns = time.perf_counter_ns()
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "invalid request body", proto="ollama")
            return
        spec = await self._gate(body, receive, send, proto="ollama")
        if spec is None:
            return
        is_chat = scope["path"] == "/api/chat"
        model = spec.name
        tool: Mapping[str, Any] | None = None
        raw = False
        prompt = system = ""
        context: list[int] = []
        if is_chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                messages = []
            text, prompt_tokens = last_user_text(messages), prompt_token_count(messages)
            images = [m.get("images") for m in messages if isinstance(m, Mapping)]
            last = messages[-1] if messages else None
            tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping) and tool_name(t)]
            if tools and isinstance(last, Mapping) and last.get("role") == "user":
                tool = choose_tool(tools, content_text(last.get("content")))
        else:
            prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
            system = body.get("system") if isinstance(body.get("system"), str) else ""
            raw = body.get("raw") is True  # the prompt as it is: no system prompt, template or context
            given = body.get("context")
            if not raw and isinstance(given, list) and all(isinstance(i, int) for i in given):
                context = given
            messages = [prompt] if prompt else []  # only its emptiness matters below
            text = prompt
            overhead = 0 if raw else len(context) + len(system.split()) + 4  # the template's and the system prompt's
            prompt_tokens = len(prompt.split()) + overhead
            images = [body.get("images")]
        error = _image_error(images) or _format_error(body.get("format"))
        think = body.get("think")
        if error is None and think not in (None, False) and not spec.thinking:
            error = f'"{model}" does not support thinking'
        if error is not None:
            await self._bad_request(send, error, proto="ollama")
            return
        created_at = iso_now()

        if not messages:
            # Ollama treats an empty chat/prompt as "load the model" and answers done_reason=load.
            done: dict[str, Any] = {
                "model": model,
                "created_at": created_at,
                "done": True,
                "done_reason": "load",
            }
            if is_chat:
                done["message"] = {"role": "assistant", "content": ""}
            else:
                done["response"] = ""
            await self._send_json(send, 200, orjson.dumps(done))
            return

        options = body.get("options")
        cap = options.get("num_predict") if isinstance(options, dict) else None
        stop = options.get("stop") if isinstance(options, dict) else None
        stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
        answer = None
        fmt = body.get("format")
        if fmt:  # "json" or a JSON schema: the answer is a JSON text, cut anywhere into tokens
            words = "".join(reply_tokens(text, self._reply_length(spec))).strip()
            value = {"answer": words} if fmt == "json" else schema_value(fmt, words)
            answer = json_pieces(json.dumps(value, ensure_ascii=False))
        plan = self._plan(
            spec, text, prompt_tokens, cap, tool=tool, stops=stops, think=think is not False, answer=answer
        )
        done_reason = "length" if plan.finish_reason == "length" else "stop"  # a tool call ends with "stop" too
        tool_calls = None
        if plan.call is not None:  # whole, as Ollama sends them; no id or index (ollama's Message.ToolCall)
            tool_calls = [{"function": {"name": plan.call.name, "arguments": plan.call.arguments}}]

        def line(content: str, thinking: str = "", calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
            if is_chat:
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if thinking:
                    message["thinking"] = thinking
                if calls:
                    message["tool_calls"] = calls
                return {"model": model, "created_at": created_at, "message": message, "done": False}
            obj = {"model": model, "created_at": created_at, "response": content}
            if thinking:
                obj["thinking"] = thinking
            return {**obj, "done": False}

        def final(content: str, thinking: str, calls: list[dict[str, Any]] | None, first_token_ns: int) -> bytes:
            obj = line(content, thinking, calls)
            now = time.perf_counter_ns()
            obj["done"] = True
            obj["done_reason"] = done_reason
            if not is_chat and not raw:
                # The conversation so far as token ids, for the next request's `context`.
                obj["context"] = context + _token_ids(f"{system} {prompt} {plan.text}")
            obj["total_duration"] = now - start_ns
            obj["load_duration"] = 0
            if spec.usage:
                obj["prompt_eval_count"] = plan.prompt_tokens
            obj["prompt_eval_duration"] = max(first_token_ns - start_ns, 1)
            if spec.usage:
                obj["eval_count"] = plan.completion_tokens
            obj["eval_duration"] = max(now - first_token_ns, 1)
            return orjson.dumps(obj)

        if body.get("stream") is False:  # Ollama streams unless told otherwise
            if spec.behaviour in MIDWAY:
                await self._fail_midway(spec, send, receive, b'{"model":"fake-midfail","created_at":"', plan)
                return
            first_ns = time.perf_counter_ns()
            if not await self._wait_before_full_response(plan, receive):
                return
            await self._send_json(send, 200, final(plan.text, plan.thinking_text, tool_calls, first_ns))
            self.stats.completion_tokens_served += plan.completion_tokens
            return

        def pieces() -> Iterator[bytes]:
            for tok in plan.thinking:
                yield orjson.dumps(line("", thinking=tok)) + b"\n"
            for tok in plan.tokens:
                yield orjson.dumps(line(tok)) + b"\n"
            if plan.call is not None:
                # Every argument piece is a token, but the call goes out whole with the last one.
                yield from itertools.repeat(b"", len(plan.call.pieces) - 1)
                yield orjson.dumps(line("", calls=tool_calls)) + b"\n"

        watch = ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            first_ns = time.perf_counter_ns()
            await send({"type": "http.response.start", "status": 200, "headers": HDR_NDJSON})
            if not await self._stream_pieces(pieces(), plan, watch, send, midfail_partial=b'{"model'):
                return
            await send(
                {"type": "http.response.body", "body": final("", "", None, first_ns) + b"\n", "more_body": False}
            )
        finally:
            watch.close()

    async def _ollama_embed(self, scope: Scope, receive: Receive, send: Send) -> None:
        # /api/embed (batch, "input") and the legacy /api/embeddings (single, "prompt").
        self.stats.embed_requests += 1
        start_ns = time.perf_counter_ns()
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "invalid request body", proto="ollama")
            return
        legacy = scope["path"] == "/api/embeddings"
        raw = body.get("prompt", "") if legacy else body.get("input")
        inputs = embed_inputs(raw if raw is not None else [])
        if inputs is None or (legacy and not isinstance(raw, str)):
            await self._bad_request(send, "invalid input type", proto="ollama")
            return
        spec = await self._gate(body, receive, send, proto="ollama")
        if spec is None:
            return
        if spec.behaviour in MIDWAY:
            await self._fail_midway(spec, send, receive, b'{"model":"fake-midfail","embeddings":[[0.', None)
            return
        n_tokens = sum(n for _, n in inputs)
        self.stats.prompt_tokens += n_tokens
        if self.latency > 0 and not await self._wait_latency(receive):
            return
        result: dict[str, Any]
        if legacy:
            result = {"embedding": embedding(inputs[0][0])}
        else:
            result = {"model": spec.name, "embeddings": [embedding(t) for t, _ in inputs]}
            result["total_duration"] = time.perf_counter_ns() - start_ns
            result["load_duration"] = 0
            if spec.usage:
                result["prompt_eval_count"] = n_tokens
        await self._send_json(send, 200, orjson.dumps(result))
