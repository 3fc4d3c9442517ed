"""FakeUpstreamApp: the protocols mixed over the shared core, and the ASGI entry point that routes to them."""

from __future__ import annotations

import orjson

from .anthropic_api import ANTHROPIC_MODELS, AnthropicProtocol, anthropic_models_page, speaks_anthropic
from .content import DEFAULT_TOKENS, MODEL_CREATED, MODELS
from .core import Handler, Receive, Scope, Send, anthropic_error, openai_error, wait_disconnect
from .ollama_api import TAGS_BODY, VERSION_BODY, OllamaProtocol
from .openai_api import OPENAI_MODELS_BODY, OpenAIProtocol
from .responses_api import ResponsesProtocol


class FakeUpstreamApp(OpenAIProtocol, ResponsesProtocol, OllamaProtocol, AnthropicProtocol):
    """Pure-ASGI fake LLM upstream (OpenAI chat, completions and Responses, Ollama and Anthropic on one port)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token_delay: float = 0.0,
        tokens: int = DEFAULT_TOKENS,
        latency: float = 0.0,
    ) -> None:
        super().__init__(api_key=api_key, token_delay=token_delay, tokens=tokens, latency=latency)
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): self._openai_chat,
            ("POST", "/v1/completions"): self._openai_completions,
            ("POST", "/v1/responses"): self._responses,
            ("POST", "/v1/embeddings"): self._openai_embeddings,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/messages"): self._anthropic_messages,
            ("POST", "/v1/messages/count_tokens"): self._anthropic_count_tokens,
            ("POST", "/api/chat"): self._ollama_chat,
            ("POST", "/api/generate"): self._ollama_chat,
            ("POST", "/api/embed"): self._ollama_embed,
            ("POST", "/api/embeddings"): self._ollama_embed,
            ("GET", "/api/tags"): self._static(TAGS_BODY),
            ("GET", "/api/version"): self._static(VERSION_BODY),
            ("POST", "/api/show"): self._ollama_show,
        }

    # ---- entry point -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if path.startswith("/_"):
            await self._control(method, path, receive, send)
            return
        is_v1 = path.startswith("/v1/")
        if not is_v1 and not path.startswith("/api/"):
            if path == "/" and method in ("GET", "HEAD"):
                # Ollama answers its root with this text; some clients use it as a health check.
                await self._send_raw(send, 200, b"Ollama is running", b"text/plain; charset=utf-8")
            else:
                await self._send_raw(send, 404, b"404 page not found", b"text/plain; charset=utf-8")
            return

        stats = self.stats
        stats.requests += 1
        if self.failing in ("error", "overloaded"):
            await self._send_failing(scope, send, is_v1=is_v1)
            return
        if self.failing == "hang":
            await wait_disconnect(receive)
            return
        stats.in_flight += 1
        if stats.in_flight > stats.max_in_flight:
            stats.max_in_flight = stats.in_flight
        try:
            if self.api_keys is not None and not self._authorized(scope, self.api_keys):
                stats.unauthorized += 1
                if is_v1 and speaks_anthropic(scope):
                    status, body = anthropic_error("authentication_error", "invalid x-api-key")
                elif is_v1:
                    status = 401
                    body = openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
                else:
                    status, body = 401, b'{"error":"unauthorized"}'
                await self._send_json(send, status, body)
                return
            handler = self._routes.get((method, path))
            if handler is None and is_v1 and method == "GET" and path.startswith("/v1/models/"):
                handler = self._model
            if handler is None:
                if is_v1 and speaks_anthropic(scope):
                    status, body = anthropic_error("not_found_error", f"Not Found: {method} {path}")
                elif is_v1:
                    status = 404
                    body = openai_error(f"Unknown request URL: {method} {path}", "invalid_request_error", None)
                else:
                    status, body = 404, b'{"error":"404 page not found"}'
                await self._send_json(send, status, body)
                return
            await handler(scope, receive, send)
        finally:
            stats.in_flight -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _authorized(scope: Scope, keys: frozenset[bytes]) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization" and value.startswith(b"Bearer ") and value[len(b"Bearer ") :] in keys:
                return True
            if name == b"x-api-key" and value in keys:  # as Anthropic clients send it
                return True
        return False

    async def _send_failing(self, scope: Scope, send: Send, *, is_v1: bool) -> None:
        """Answer as POST /_fail/error (500) or /_fail/overloaded (529) says, in the request's protocol."""
        error = self.failing == "error"
        if is_v1 and speaks_anthropic(scope):
            kind = "api_error" if error else "overloaded_error"
            status, body = anthropic_error(kind, f"the upstream is failing (POST /_fail/{self.failing})")
        else:
            status = 500 if error else 529
            body = orjson.dumps({"error": f"the upstream is failing (POST /_fail/{self.failing})"})
        await self._send_json(send, status, body)

    # ---- model lists -------------------------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /v1/models: Anthropic's page shape for Anthropic clients, OpenAI's list otherwise."""
        if not speaks_anthropic(scope):
            await self._send_json(send, 200, OPENAI_MODELS_BODY)
            return
        await self._send_json(send, *anthropic_models_page(scope["query_string"]))

    async def _model(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /v1/models/{id}, in the shape of the client's protocol."""
        name = scope["path"][len("/v1/models/") :]
        anthropic = speaks_anthropic(scope)
        if name not in MODELS:
            if anthropic:
                await self._send_json(send, *anthropic_error("not_found_error", f"model: {name}"))
            else:
                await self._send_json(send, 404, self._not_found_body(name, proto="openai"))
        elif anthropic:
            info = next(m for m in ANTHROPIC_MODELS if m["id"] == name)
            await self._send_json(send, 200, orjson.dumps(info))
        else:
            payload = {"id": name, "object": "model", "created": MODEL_CREATED, "owned_by": "fake"}
            await self._send_json(send, 200, orjson.dumps(payload))
