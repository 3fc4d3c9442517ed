"""Token usage extraction: (prompt, completion) counts from an OpenAI or an Ollama object (and OpenAI's cached part
of the prompt, which costs less)."""

from __future__ import annotations

from gatehouse.gateway.translate.common import JSON

__all__ = ["usage_from_ollama", "usage_from_openai"]


def usage_from_openai(obj: JSON) -> tuple[int, int, int] | None:
    """(prompt_tokens, completion_tokens, cached prompt tokens) from an OpenAI object's "usage", or None when
    absent/null."""
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, cached


def usage_from_ollama(obj: JSON) -> tuple[int, int] | None:
    """(prompt_eval_count, eval_count) from a final Ollama object, or None when not final / not reported."""
    if obj.get("done") is False:
        return None
    prompt = obj.get("prompt_eval_count")
    completion = obj.get("eval_count")
    if prompt is None and completion is None:
        return None
    return prompt or 0, completion or 0
