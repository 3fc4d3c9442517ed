"""Pure translation between the OpenAI and Ollama chat/embedding protocols (requests, responses, streams).

Everything here works on plain JSON objects (dicts) and does no I/O. Import from the module that holds
what you need:

- `common`: the JSON alias, the two error types, tool-call argument conversion and `rfc3339_now`.
- `usage`: (prompt, completion) token counts from either protocol's objects.
- `chat`: chat requests and whole (non-streamed) chat responses, both directions.
- `stream`: the stateful stream translators, one per direction.
- `embeddings`: embedding requests and responses, both directions, with base64 vectors.
"""
