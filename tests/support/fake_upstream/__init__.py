"""Fake LLM upstream speaking the OpenAI, Ollama and Anthropic HTTP protocols, for tests and benchmarks.

Run it as its own process::

    python -m tests.support.fake_upstream --host 127.0.0.1 --port 0 [--api-key KEY]
        [--token-delay SECONDS] [--tokens N] [--latency SECONDS]

(or ``python tests/support/fake_upstream ...``, the package's folder as a script, from anywhere).

It prints exactly one line ``READY <port>`` on stdout once it is listening and exits with status 0
on SIGTERM/SIGINT. From Python, use :func:`run_fake_upstream`.

The app is plain ASGI (no framework) served by uvicorn with uvloop + httptools, because benchmarks
use it as the upstream and it must never be the bottleneck. Modules: ``content`` (the models and what
they answer), ``core`` (reading, gating, pacing, control), one per protocol (``openai_api``,
``ollama_api``, ``anthropic_api``), ``app`` (FakeUpstreamApp mixes them and routes), ``process`` (the
command line and :func:`run_fake_upstream`).

Behaviour is chosen by the model name, the same for all three protocols:

* ``fake-chat`` / ``fake-embed``: normal deterministic replies / embeddings.
* ``fake-slow``: at least 0.05 s before each token.
* ``fake-error``: HTTP 500 at once.
* ``fake-hang``: never sends a response head; waits until the client goes away.
* ``fake-midfail``: sends 3 tokens (or a partial JSON body) and then drops the connection.
* ``fake-nousage``: like ``fake-chat`` but never reports token usage (an Anthropic answer then has no
  ``usage`` at all, which Anthropic itself never does).
* ``fake-long``: 200 tokens, at least 0.01 s apart.
* ``fake-floats``: an embedding model that answers floats even when asked for base64, as some servers do.

Endpoints: ``GET /v1/models[/{id}]``, ``POST /v1/chat/completions``, ``POST /v1/embeddings``,
``POST /v1/messages``, ``POST /v1/messages/count_tokens``, ``GET /api/tags``, ``GET /api/version``,
``POST /api/show``, ``POST /api/chat``, ``POST /api/generate``, ``POST /api/embed``,
``POST /api/embeddings`` and ``GET /`` ("Ollama is running").

With ``--api-key KEY`` every /v1 and /api request needs ``Authorization: Bearer KEY`` or
``x-api-key: KEY``.

Anthropic's Messages API (shapes from the official ``anthropic`` package's types):

* ``POST /v1/messages`` checks the request as Anthropic does (``max_tokens`` required; ``system`` a
  string or text blocks; content a string or text, image, document, tool_use and tool_result blocks;
  every tool_use answered by a tool_result in the next message, and no other) and answers a Message,
  or with ``"stream": true`` the documented events: ``message_start``, ``content_block_start``,
  ``ping``, ``content_block_delta`` (``text_delta``, ``input_json_delta``), ``content_block_stop``,
  ``message_delta``, ``message_stop``. ``stop_reason`` is ``end_turn``, ``max_tokens``,
  ``stop_sequence`` (a text reply is cut before the first of ``stop_sequences`` it contains) or
  ``tool_use``. A message id is ``msg_...``; usage carries zero cache counts, ``message_start`` one
  output token, ``message_delta`` the final totals.
* Tool calls: when the request has ``tools``, ``tool_choice`` is not ``none`` and the last message is a
  user turn without tool_result blocks, the model calls a tool if ``tool_choice`` says ``any`` or
  ``tool``, or if the last user text names a tool or says "tool"/"tools": the named tool, else the
  first one. The answer is 2 words of text then a tool_use block (id ``toolu_...``, input from
  :func:`tool_call_input`), stop_reason ``tool_use``; streamed, the input arrives as an empty
  ``input_json_delta`` then pieces of 1 to 8 characters cut anywhere. Each piece and each word is
  one output token. A call that does not fit in ``max_tokens`` is not made: the answer is
  ``max_tokens`` words, stop_reason ``max_tokens``. A last user turn carrying tool_result blocks is
  answered with text.
* Prompt tokens are counted as for the other protocols (:func:`prompt_token_count` over
  :func:`anthropic_chat_messages`: the system prompt is one message; text blocks and tool_result
  text count, images and tool_use inputs do not); ``POST /v1/messages/count_tokens`` answers that
  number as ``{"input_tokens": N}``.
* Errors are ``{"type": "error", "error": {"type", "message"}}``: 400 invalid_request_error,
  401 authentication_error, 404 not_found_error, 500 api_error, 529 overloaded_error.
* ``GET /v1/models[/{id}]`` answers Anthropic's shape (``type: model``, ``display_name``,
  ``created_at``, ``lifecycle: active``, ``max_input_tokens`` 4096, ``max_tokens`` 1024 (advertised,
  not enforced); ``has_more``, ``first_id``, ``last_id``; ``limit``, ``after_id`` and ``before_id``
  pages) when the request carries ``anthropic-version`` or ``x-api-key``, OpenAI's otherwise.

Control endpoints (never authenticated): ``GET /_stats``, ``GET /_requests``, ``POST /_reset``, and
``POST /_fail/{ok|error|overloaded|hang}``, which makes every /v1 and /api request (model lists
included) answer normally, answer 500, answer 529, or never answer, until changed.
``--token-delay`` paces streamed tokens; a non-streamed reply waits the same total time before it is
sent. ``--latency`` delays the start of chat/generate/messages/embedding responses.
"""

from .anthropic_api import anthropic_chat_messages
from .app import FakeUpstreamApp
from .content import (
    DEFAULT_TOKENS,
    EMBEDDING_DIM,
    MODELS,
    WORDS,
    fake_embedding,
    last_user_text,
    prompt_token_count,
    reply_text,
    reply_tokens,
    tool_call_input,
)
from .process import FakeUpstream, main, run_fake_upstream

__all__ = [
    "DEFAULT_TOKENS",
    "EMBEDDING_DIM",
    "MODELS",
    "WORDS",
    "FakeUpstream",
    "FakeUpstreamApp",
    "anthropic_chat_messages",
    "fake_embedding",
    "last_user_text",
    "main",
    "prompt_token_count",
    "reply_text",
    "reply_tokens",
    "run_fake_upstream",
    "tool_call_input",
]
