"""Fake LLM upstream speaking the OpenAI (chat, completions, Responses), Ollama and Anthropic protocols, for tests.

Run it as its own process::

    python -m tests.support.fake_upstream --host 127.0.0.1 --port 0 [--api-key KEY]
        [--token-delay SECONDS] [--tokens N] [--latency SECONDS]

(or ``python tests/support/fake_upstream ...``, the package's folder as a script, from anywhere).

It prints exactly one line ``READY <port>`` on stdout once it is listening and exits with status 0
on SIGTERM/SIGINT. From Python, use :func:`run_fake_upstream`.

The app is plain ASGI (no framework) served by uvicorn with uvloop + httptools, because benchmarks
use it as the upstream and it must never be the bottleneck. Modules: ``content`` (the models and what
they answer), ``core`` (reading, gating, planning, pacing, control), one per protocol (``openai_api``,
``responses_api``, ``ollama_api``, ``anthropic_api``), ``app`` (FakeUpstreamApp mixes them and routes), ``process`` (the
command line and :func:`run_fake_upstream`).

Behaviour is chosen by the model name, the same for every protocol:

* ``fake-chat`` / ``fake-embed``: normal deterministic replies / embeddings.
* ``fake-slow``: at least 0.05 s before each token.
* ``fake-error``: HTTP 500 at once.
* ``fake-hang``: never sends a response head; waits until the client goes away.
* ``fake-midfail``: sends 3 tokens (or a partial JSON body) and then drops the connection.
* ``fake-nousage``: like ``fake-chat`` but never reports token usage (an Anthropic answer then has no
  ``usage`` at all, which Anthropic itself never does; a Responses answer has ``usage: null``).
* ``fake-long``: 200 tokens, at least 0.01 s apart.
* ``fake-floats``: an embedding model that answers floats even when asked for base64, as some servers do.
* ``fake-think``: a reasoning model: first :data:`THINKING_TOKENS` (6) tokens of reasoning
  (:func:`thinking_tokens` of the last user text), then its answer. See "Reasoning" below.
* ``fake-cached``: like ``fake-chat``, but half of every prompt (rounded down) is reported as read from a
  prompt cache: OpenAI's ``usage.prompt_tokens_details.cached_tokens`` (chat and legacy completions), the
  Responses API's ``input_tokens_details.cached_tokens``, Anthropic's ``cache_read_input_tokens`` (its
  ``input_tokens`` then the rest); Ollama has no such count.

Faults (for the fault matrix, tests/e2e/faults), each in every protocol; "after 3 tokens" is
:data:`MIDFAIL_TOKENS` into a stream, and a whole (non-streamed) answer breaks at once. Every answer they
break is entered in the ledger as cut short, with the tokens really sent:

* ``fake-429``: 429 at once, in the protocol's error shape (Anthropic's ``rate_limit_error``), with
  ``Retry-After: 7`` (:data:`RETRY_AFTER_SECONDS`).
* ``fake-hang-mid``: after 3 tokens (a whole answer: after its head and the start of its body) nothing more,
  until the client goes away.
* ``fake-reset``: after 3 tokens (a whole answer: after its head and the start of its body) the connection is
  reset: a TCP RST (SO_LINGER 0), not a FIN.
* ``fake-badjson``: after 3 tokens, one whole event (or NDJSON line) whose JSON is broken, then nothing until the
  client goes away; a whole answer is a complete body that is not JSON.
* ``fake-badframe``: after 3 tokens, half an event (or line) and a clean end of the body, without the
  protocol's terminal event (``[DONE]``, ``done``, ``message_stop``, ``response.completed``); a whole answer is
  JSON but not an object (``["not", "an", "answer"]``).
* ``fake-huge``: after 3 tokens, one line of :data:`HUGE_ANSWER_BYTES` (3 MiB: an SSE ``data:`` line or an
  NDJSON line holding ``{"padding": "..."}``), then nothing until the client goes away; a whole answer is such
  an object.
* ``fake-flood``: a normal answer of :data:`FLOOD_TOKENS` tokens of :data:`FLOOD_TOKEN_CHARS` characters (a
  word padded with dots): 32 MiB sent as fast as the client reads it, for backpressure tests.

Endpoints: ``GET /v1/models[/{id}]``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/responses``, ``POST /v1/embeddings``, ``POST /v1/messages``,
``POST /v1/messages/count_tokens``, ``GET /api/tags``, ``GET /api/version``, ``POST /api/show``,
``POST /api/chat``, ``POST /api/generate``, ``POST /api/embed``, ``POST /api/embeddings`` and
``GET /`` ("Ollama is running").

With ``--api-key KEY`` every /v1 and /api request needs ``Authorization: Bearer KEY`` or
``x-api-key: KEY``.

What the model says (:func:`reply_tokens`, :func:`reply_text`): ``--tokens`` words (8 by default;
200 for fake-long) seeded by the text of the last user message, one token each, cut at the
request's cap (finish ``length``). Prompt tokens: the words of every message's text plus 4 per
message (:func:`prompt_token_count`); every protocol is first seen as such a chat, so the same
conversation costs the same everywhere. Shapes come from the official ``openai``, ``anthropic`` and
``ollama`` packages' types.

Tool calls, the same rule in every protocol: when the request has tools, does not forbid a call
(``tool_choice`` ``none``) and its last message is a user turn (not a tool result: an OpenAI ``tool``
message, an Ollama ``tool`` message, Anthropic tool_result blocks, a Responses
``function_call_output``), the model calls a tool if the request forces one (OpenAI ``required`` or
a named function, Anthropic ``any`` or ``tool``), or if the last user text names a tool or says
"tool"/"tools": the named tool, else the first one (:func:`choose_tool`). The arguments are
:func:`tool_call_input` (one value per property of the tool's schema); as a JSON text they are cut
anywhere into pieces of 1 to 8 characters, each one completion token. A call that does not fit in
the request's cap is not made: the model talks until the cap instead (finish ``length``). Otherwise
(a tool result last, no tools) it answers with text.

Reasoning (fake-think): the reasoning tokens come first and count as completion tokens (and within
the cap: a cap smaller than the reasoning cuts it, with no answer). OpenAI chat carries them as
``reasoning_content`` (the vLLM / DeepSeek field) in the message or the deltas, and
``usage.completion_tokens_details.reasoning_tokens``; ``reasoning_effort: "none"`` turns reasoning
off. Ollama as ``thinking`` (chat's message, generate's top level); ``think: false`` turns it off,
and ``think`` on any other model is a 400 (``"<model>" does not support thinking``), as Ollama
answers; /api/show lists the ``thinking`` capability. Anthropic as a ``thinking`` block with a
``signature`` (:func:`thinking_signature`) before the text, streamed as ``thinking_delta`` events
then one ``signature_delta``; ``thinking: {"type": "disabled"}`` turns it off. The Responses API as a
``reasoning`` item (``content`` of ``reasoning_text``, ``summary`` empty) and
``output_tokens_details.reasoning_tokens``; ``reasoning.effort: "none"`` turns it off. Legacy
completions never reason.

OpenAI chat completions (``POST /v1/chat/completions``): a ``chat.completion`` (id
``chatcmpl-...``), or SSE chunks (a first ``{"role": "assistant", "content": ""}`` delta, one per
token, a last ``{}`` delta with finish_reason, a usage chunk with empty choices when
``stream_options.include_usage``, ``data: [DONE]``); ``max_completion_tokens`` or ``max_tokens``
caps, ``stop`` (a string or up to 4) cuts the text before the first it contains (finish ``stop``).
A tool call (``tools`` of type function, ``tool_choice`` ``none``/``auto``/``required``/a named
function/``allowed_tools``) is ``message.tool_calls`` ``[{"id": "call_...", "type": "function",
"function": {"name", "arguments": "<JSON text>"}}]`` with a null content, finish_reason
``tool_calls``; streamed, a first delta carries the call's index, id, type, name and ``arguments:
""`` (with the role and a null content when nothing came before it), then one delta per piece of
the arguments. ``tool_choice`` without tools, or naming a function that is not one of them, is a 400.

OpenAI legacy completions (``POST /v1/completions``): ``prompt`` a string, a list of strings or
token arrays (the first is answered; ``n`` other than 1 is a 400); prompt tokens are its words (or
tokens), without the 4 a chat message adds; ``max_tokens`` 16 unless given (as OpenAI's), ``stop``,
``echo`` (the prompt before the text; streamed, as a first chunk). A ``text_completion`` (id
``cmpl-...``, ``choices[0].text``, finish_reason ``stop`` or ``length``), or SSE chunks of the same
shape, one per token, a last one with ``text: ""`` and the finish_reason, the usage chunk (empty
choices) when ``stream_options.include_usage``, ``data: [DONE]``.

OpenAI Responses API (``POST /v1/responses``), stateless: ``input`` a string or a list of items
(message items with string or input_text / output_text content, function_call, function_call_output
answering a function_call of the same input, or a 400; reasoning and other items are accepted and
not counted), ``instructions`` (the system message), ``tools`` (function tools), ``tool_choice``,
``max_output_tokens``, ``stream``. A ``previous_response_id`` is always unknown: 400
``previous_response_not_found``; ``store`` is echoed, nothing is stored. A Response (id
``resp_...``, status ``completed``, or ``incomplete`` with ``incomplete_details.reason
max_output_tokens`` at the cap) whose output is a ``reasoning`` item (fake-think), a ``message``
item (id ``msg_...``, one ``output_text`` part, ``annotations: []``) unless the model called a
function or ran out while reasoning, and a ``function_call`` item (id ``fc_...``, ``call_id``
``call_...``, name, arguments) for a call; usage ``input_tokens`` (with a cached count, zero but for
fake-cached, and a zero cache-write count), ``output_tokens`` (with ``reasoning_tokens``),
``total_tokens``. Streamed, the typed events, each an ``event: <type>`` line and its data with
``type`` and ``sequence_number``: ``response.created``, ``response.in_progress``, then per item
``response.output_item.added``, ``response.content_part.added``, one ``response.reasoning_text.delta`` /
``response.output_text.delta`` / ``response.function_call_arguments.delta`` per token, the matching
``.done``, ``response.content_part.done``, ``response.output_item.done``; last
``response.completed`` (or ``response.incomplete``) carrying the whole response with its usage.

Ollama (``/api/chat`` and ``/api/generate``): NDJSON lines unless ``stream`` is false, a last
``done`` object with ``done_reason`` (``stop``, ``length``, ``load`` for an empty chat or prompt),
``prompt_eval_count`` and ``eval_count`` (every completion token); ``options.num_predict`` caps
(negative: no cap), ``options.stop`` cuts the text; ``format`` ``"json"`` makes the answer
``{"answer": "<words>"}`` and a JSON schema :func:`schema_value` of it, a JSON text cut anywhere
into tokens (another format is a 400); ``images`` (a message's, generate's) must be base64, else a
400 as Ollama's (``illegal base64 data at input byte N``), and are not counted. Chat tool calls
(``tools``; Ollama has no tool_choice) are ``message.tool_calls`` ``[{"function": {"name",
"arguments": {object}}}]`` (no id or index, as ollama's Message.ToolCall) with content ``""`` and
done_reason ``stop``; streamed, the call comes whole in one line once all its pieces are produced.
Generate: ``system`` is counted (one message with the prompt: their words + 4), ``context`` (token
ids from an earlier answer) is counted and its final object carries ``context``, the token ids of
the conversation so far, unless ``raw``: then the prompt alone is counted (its words), ``system``
and ``context`` are ignored and no context is returned.

Anthropic's Messages API (shapes from the official ``anthropic`` package's types):

* ``POST /v1/messages`` checks the request as Anthropic does (``max_tokens`` required; ``system`` a
  string or text blocks; content a string or text, image, document, tool_use and tool_result blocks;
  every tool_use answered by a tool_result in the next message, and no other) and answers a Message,
  or with ``"stream": true`` the documented events: ``message_start``, ``content_block_start``,
  ``ping``, ``content_block_delta`` (``thinking_delta``, ``signature_delta``, ``text_delta``,
  ``input_json_delta``), ``content_block_stop``, ``message_delta``, ``message_stop``.
  ``stop_reason`` is ``end_turn``, ``max_tokens``, ``stop_sequence`` (a text reply is cut before the
  first of ``stop_sequences`` it contains) or ``tool_use``. A message id is ``msg_...``; usage
  carries zero cache counts (but fake-cached's cache reads), ``message_start`` one output token,
  ``message_delta`` the final totals.
* Tool calls (the rule above; ``tool_choice`` ``any`` or ``tool`` forces one): the answer is 2 words
  of text then a tool_use block (id ``toolu_...``, input from :func:`tool_call_input`), stop_reason
  ``tool_use``; streamed, the input arrives as an empty ``input_json_delta`` then the pieces. Each
  piece and each word is one output token. A call that does not fit in ``max_tokens`` is not made:
  the answer is ``max_tokens`` words (after any thinking), stop_reason ``max_tokens``.
* Prompt tokens are counted as for the other protocols (:func:`prompt_token_count` over
  :func:`anthropic_chat_messages`: the system prompt is one message; text blocks and tool_result
  text count, images, thinking and tool_use inputs do not); ``POST /v1/messages/count_tokens``
  answers that number as ``{"input_tokens": N}``.
* Errors are ``{"type": "error", "error": {"type", "message"}}``: 400 invalid_request_error,
  401 authentication_error, 404 not_found_error, 500 api_error, 529 overloaded_error.
* ``GET /v1/models[/{id}]`` answers Anthropic's shape (``type: model``, ``display_name``,
  ``created_at``, ``lifecycle: active``, ``max_input_tokens`` 4096, ``max_tokens`` 1024 (advertised,
  not enforced); ``has_more``, ``first_id``, ``last_id``; ``limit``, ``after_id`` and ``before_id``
  pages) when the request carries ``anthropic-version`` or ``x-api-key``, OpenAI's otherwise.

Control endpoints (never authenticated): ``GET /_stats``, ``GET /_requests`` (the last 100 requests with
a body: path, JSON body, headers without credentials), ``GET /_ledger`` (per model: the answers planned and
their prompt and completion tokens, and apart those whose client left before the end (``cut_short``) with the
tokens they did produce: what a gateway's usage records should add up to), ``POST /_reset``,
``POST /_control/keys {"keys": [...]}`` (the API keys accepted from now on, a provider's key rotation: both
keys, then only the new one; ``unauthorized`` in /_stats counts the requests refused for their key), and
``POST /_fail/{ok|error|overloaded|hang}``, which makes every /v1 and /api request (model lists
included) answer normally, answer 500, answer 529, or never answer, until changed.
``--token-delay`` paces streamed tokens; a non-streamed reply waits the same total time before it is
sent. ``--latency`` delays the start of every generation and embedding response.
"""

from .anthropic_api import anthropic_chat_messages
from .app import FakeUpstreamApp
from .content import (
    DEFAULT_TOKENS,
    EMBEDDING_DIM,
    FLOOD_TOKEN_CHARS,
    FLOOD_TOKENS,
    HUGE_ANSWER_BYTES,
    MIDFAIL_TOKENS,
    MODELS,
    RETRY_AFTER_SECONDS,
    THINKING_TOKENS,
    WORDS,
    choose_tool,
    fake_embedding,
    last_user_text,
    prompt_token_count,
    reply_text,
    reply_tokens,
    schema_value,
    thinking_signature,
    thinking_tokens,
    tool_call_input,
)
from .process import FakeUpstream, main, run_fake_upstream
from .responses_api import responses_chat_messages

__all__ = [
    "DEFAULT_TOKENS",
    "EMBEDDING_DIM",
    "FLOOD_TOKENS",
    "FLOOD_TOKEN_CHARS",
    "HUGE_ANSWER_BYTES",
    "MIDFAIL_TOKENS",
    "MODELS",
    "RETRY_AFTER_SECONDS",
    "THINKING_TOKENS",
    "WORDS",
    "FakeUpstream",
    "FakeUpstreamApp",
    "anthropic_chat_messages",
    "choose_tool",
    "fake_embedding",
    "last_user_text",
    "main",
    "prompt_token_count",
    "reply_text",
    "reply_tokens",
    "responses_chat_messages",
    "run_fake_upstream",
    "schema_value",
    "thinking_signature",
    "thinking_tokens",
    "tool_call_input",
]
