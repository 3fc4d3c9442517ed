"""Chat requests and whole chat answers, OpenAI <-> Ollama in both directions, as compositions of the two
protocols' codecs over the internal representation (`openai`, `ollama`)."""

from __future__ import annotations

from gatehouse.gateway.translate import ollama, openai
from gatehouse.gateway.translate.common import JSON

__all__ = [
    "ollama_chat_request_to_openai",
    "ollama_chat_response_to_openai",
    "openai_chat_request_to_ollama",
    "openai_chat_response_to_ollama",
]


def openai_chat_request_to_ollama(body: JSON, *, model: str) -> JSON:
    """OpenAI chat request -> Ollama /api/chat request body (upstream model name `model`)."""
    return ollama.encode_request(openai.decode_request(body), model, [])[1]


def ollama_chat_request_to_openai(body: JSON, *, model: str, stream: bool) -> JSON:
    """Ollama /api/chat request -> OpenAI chat request body; asks for usage when streaming."""
    request = ollama.decode_chat(body)
    request.stream = stream
    return openai.encode_request(request, model, [])[1]


def ollama_chat_response_to_openai(resp: JSON, *, model: str, request_id: str, created: int) -> JSON:
    """Ollama non-streamed chat response -> OpenAI chat.completion object (with usage)."""
    result = ollama.decode_result(resp, call_prefix=f"call_{request_id}_")
    return openai.encode_result(result, model=model, response_id=f"chatcmpl-{request_id}", created=created)


def openai_chat_response_to_ollama(resp: JSON, *, model: str) -> JSON:
    """OpenAI chat.completion -> Ollama non-streamed /api/chat response (done: true, counts from usage)."""
    return ollama.encode_chat_result(openai.decode_result(resp), model=model)
