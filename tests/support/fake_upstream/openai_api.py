"""OpenAI's protocol: chat completions and embeddings."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from .content import EMBED_F32, MODEL_CREATED, MODELS, embed_inputs, embedding, last_user_text, prompt_token_count
from .core import HDR_SSE, SSE_DONE, ClientWatch, Core, Receive, Scope, Send

# The model list is serialised once; it is served on every health check and benchmark.
OPENAI_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": "fake"} for m in MODELS],
    }
)


class OpenAIProtocol(Core):
    """POST /v1/chat/completions and /v1/embeddings."""

    async def _openai_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.chat_requests += 1
        body = await self._read_body(scope, receive)
        if body is None:
            await self._bad_request(send, "request body must be a JSON object", proto="openai")
            return
        spec = await self._gate(body, receive, send, proto="openai")
        if spec is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list):
            messages = []
        cap = body.get("max_completion_tokens")
        if cap is None:
            cap = body.get("max_tokens")
        plan = self._plan(spec, last_user_text(messages), prompt_token_count(messages), cap)
        completion_id = f"chatcmpl-fake{next(self._ids):012d}"
        created = int(time.time())
        model = spec.name
        usage = {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": len(plan.tokens),
            "total_tokens": plan.prompt_tokens + len(plan.tokens),
        }

        if not body.get("stream"):
            if spec.behaviour == "midfail":
                await self._abort_midway(send, b'{"object":"chat.completion","choices":[{"ind')
            if not await self._wait_before_full_response(plan, receive):
                return
            result: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(plan.tokens), "refusal": None},
                        "logprobs": None,
                        "finish_reason": plan.finish_reason,
                    }
                ],
            }
            if spec.usage:
                result["usage"] = usage
            await self._send_json(send, 200, orjson.dumps(result))
            self.stats.completion_tokens_served += len(plan.tokens)
            return

        opts = body.get("stream_options")
        include_usage = spec.usage and isinstance(opts, dict) and bool(opts.get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
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
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        watch = ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            await send({"type": "http.response.start", "status": 200, "headers": HDR_SSE})
            await send(
                {
                    "type": "http.response.body",
                    "body": chunk({"role": "assistant", "content": ""}, None),
                    "more_body": True,
                }
            )
            if not await self._stream_tokens(
                plan, watch, send, lambda tok: chunk({"content": tok}, None), midfail_partial=b'data: {"id'
            ):
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
                tail.append(b"data: " + orjson.dumps(final) + b"\n\n")
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
        if spec.behaviour == "midfail":
            await self._abort_midway(send, b'{"object":"list","data":[{"obj')
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
