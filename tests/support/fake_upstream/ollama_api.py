"""Ollama's protocol: chat, generate, embed, embeddings and show."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from .content import MODELS, embed_inputs, embedding, last_user_text, prompt_token_count
from .core import HDR_NDJSON, ClientWatch, Core, Receive, Scope, Send, iso_now

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
            "capabilities": ["embedding"] if embeds else ["completion", "tools"],
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
        if is_chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                messages = []
            text, prompt_tokens = last_user_text(messages), prompt_token_count(messages)
        else:
            prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
            system = body.get("system") if isinstance(body.get("system"), str) else ""
            messages = [prompt] if prompt else []  # only its emptiness matters below
            text, prompt_tokens = prompt, len(prompt.split()) + len(system.split()) + 4
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
        plan = self._plan(spec, text, prompt_tokens, cap)

        def line(content: str) -> dict[str, Any]:
            if is_chat:
                return {
                    "model": model,
                    "created_at": created_at,
                    "message": {"role": "assistant", "content": content},
                    "done": False,
                }
            return {"model": model, "created_at": created_at, "response": content, "done": False}

        def final(content: str, first_token_ns: int) -> bytes:
            obj = line(content)
            now = time.perf_counter_ns()
            obj["done"] = True
            obj["done_reason"] = plan.finish_reason
            obj["total_duration"] = now - start_ns
            obj["load_duration"] = 0
            if spec.usage:
                obj["prompt_eval_count"] = plan.prompt_tokens
            obj["prompt_eval_duration"] = max(first_token_ns - start_ns, 1)
            if spec.usage:
                obj["eval_count"] = len(plan.tokens)
            obj["eval_duration"] = max(now - first_token_ns, 1)
            return orjson.dumps(obj)

        if body.get("stream") is False:  # Ollama streams unless told otherwise
            if spec.behaviour == "midfail":
                await self._abort_midway(send, b'{"model":"fake-midfail","created_at":"')
            first_ns = time.perf_counter_ns()
            if not await self._wait_before_full_response(plan, receive):
                return
            await self._send_json(send, 200, final("".join(plan.tokens), first_ns))
            self.stats.completion_tokens_served += len(plan.tokens)
            return

        watch = ClientWatch(receive)
        try:
            await watch.pause(self.latency)
            if watch.gone:
                self.stats.disconnects += 1
                return
            first_ns = time.perf_counter_ns()
            await send({"type": "http.response.start", "status": 200, "headers": HDR_NDJSON})
            if not await self._stream_tokens(
                plan, watch, send, lambda tok: orjson.dumps(line(tok)) + b"\n", midfail_partial=b'{"model'
            ):
                return
            await send({"type": "http.response.body", "body": final("", first_ns) + b"\n", "more_body": False})
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
        if spec.behaviour == "midfail":
            await self._abort_midway(send, b'{"model":"fake-midfail","embeddings":[[0.')
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

    # ---- Anthropic ---------------------------------------------------------------------------
