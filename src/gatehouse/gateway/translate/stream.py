"""Stream translators between OpenAI chat and Ollama chat, fed one upstream stream object at a time: each is an
upstream decoder and a client encoder over the internal representation (`openai`, `ollama`)."""

from __future__ import annotations

from gatehouse.gateway.translate import ollama, openai
from gatehouse.gateway.translate.common import JSON

__all__ = ["OllamaToOpenAIStream", "OpenAIToOllamaStream"]


class OllamaToOpenAIStream:
    """Turns Ollama /api/chat stream objects into OpenAI chat.completion.chunk objects."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self, *, model: str, request_id: str, created: int, include_usage: bool) -> None:
        self._decoder = ollama.NdjsonDecoder(call_prefix=f"call_{request_id}_")
        self._encoder = openai.ChatEncoder(
            model=model, response_id=f"chatcmpl-{request_id}", created=created, include_usage=include_usage
        )

    def feed(self, event: JSON) -> list[JSON]:
        """Translate one Ollama stream object into zero or more OpenAI chunks."""
        if self._decoder.done:
            self._decoder.feed_object(event)  # an error after the end still raises
            return []
        chunks = self._encoder.chunks(self._decoder.feed_object(event))
        if self._decoder.done:
            chunks.extend(self._encoder.final_chunks(self._decoder.usage))
        return chunks

    @property
    def done(self) -> bool:
        """Whether the upstream's final (done: true) object has been seen."""
        return self._decoder.done

    @property
    def usage(self) -> tuple[int, int] | None:
        """(prompt_tokens, completion_tokens) once the final object reported them, else None."""
        usage = self._decoder.usage
        return usage.pair() if usage is not None else None


class OpenAIToOllamaStream:
    """Turns OpenAI chat.completion.chunk objects into Ollama /api/chat stream objects."""

    __slots__ = ("_decoder", "_encoder", "_finish_reason")

    def __init__(self, *, model: str) -> None:
        self._decoder = openai.ChatDecoder()
        self._encoder = ollama.NdjsonEncoder(model=model)
        self._finish_reason: str | None = None

    def feed(self, chunk: JSON) -> list[JSON]:
        """Translate one OpenAI chunk into zero or more Ollama stream objects (never done: true)."""
        events = self._decoder.feed_chunk(chunk)
        for choice in chunk.get("choices") or ():
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return self._encoder.objects(events)

    def finish(self) -> list[JSON]:
        """Emit any pending tool calls, then the final done: true object."""
        return self._encoder.final_objects(self._decoder.usage)

    @property
    def finish_reason(self) -> str | None:
        """The upstream's finish_reason, once seen."""
        return self._finish_reason

    @property
    def usage(self) -> tuple[int, int] | None:
        """(prompt_tokens, completion_tokens) once the upstream reported usage, else None."""
        usage = self._decoder.usage
        return usage.pair() if usage is not None else None
