"""The OpenAPI entries of the gateway routes: each request body from its model (inlined: the document needs no
extra components), each answer as the provider documents it (JSON, or its stream's media type), and every status
the route can answer with its surface's error shape."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

JSON = dict[str, Any]
Style = Literal["openai", "anthropic", "ollama"]
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


def inline(model: type[BaseModel], extra: Callable[[JSON], None] | None = None) -> JSON:
    """The model's JSON schema (validation mode, field aliases) with its $defs inlined."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: JSON = _tidy(resolve(schema))
    if extra is not None:
        extra(resolved)
    return resolved


def _tidy(node: Any) -> Any:
    """Without pydantic's titles and null defaults: an absent field is not a null one (some fields take no null)."""
    if isinstance(node, dict):
        return {
            key: _tidy(value)
            for key, value in node.items()
            if not (key == "title" and isinstance(value, str)) and not (key == "default" and value is None)
        }
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    return node


def request_body(model: type[BaseModel], extra: Callable[[JSON], None] | None = None) -> JSON:
    """`openapi_extra` for a route whose handler reads its JSON body itself (checked against `model`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(model, extra)}},
        }
    }


def _obj(required: list[str], **properties: Any) -> JSON:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": True}


STRING: JSON = {"type": "string"}
INTEGER: JSON = {"type": "integer"}
NUMBER: JSON = {"type": "number"}
BOOLEAN: JSON = {"type": "boolean"}
ARRAY: JSON = {"type": "array"}
OBJECT: JSON = {"type": "object", "additionalProperties": True}
NULLABLE_STRING: JSON = {"type": ["string", "null"]}

ERROR_SCHEMAS: dict[Style, JSON] = {
    "openai": _obj(
        ["error"],
        error=_obj(["type", "code", "message"], type=STRING, code=STRING, message=STRING, param=STRING),
    ),
    "anthropic": _obj(
        ["type", "error"],
        type={"const": "error"},
        error=_obj(["type", "message"], type=STRING, message=STRING, code=STRING),
    ),
    "ollama": _obj(["error"], error=STRING),
}
ERROR_MEANINGS = {
    400: "The request is malformed: `param` (OpenAI's shape) names the field.",
    401: "No API key, or an unknown, expired or revoked one.",
    403: "This key or user may not do this (or use this model), or the client's address is blocked.",
    404: "No such model (or stored response).",
    410: "An operator ended the request.",
    413: "The body exceeds MAX_REQUEST_BYTES.",
    415: "The body is not JSON: send Content-Type: application/json.",
    429: "A rate limit or quota is reached (Retry-After says when to retry).",
    502: "The upstream failed or could not be reached.",
    503: "No usable upstream, or the database is unavailable (Retry-After).",
    504: "The upstream did not answer in time.",
}
READ_STATUSES = (401, 403, 429, 503)
BODY_STATUSES = (400, 401, 403, 404, 413, 415, 429, 502, 503, 504)
GENERATION_STATUSES = (*BODY_STATUSES, 410)


def answers(
    style: Style,
    ok: JSON,
    *,
    stream: str | None = None,
    statuses: tuple[int, ...] = BODY_STATUSES,
    ok_description: str = "The answer.",
) -> dict[int | str, JSON]:
    """`responses` for a route: its 200 (JSON, and its stream's media type when it streams) and its errors."""
    content: JSON = {"application/json": {"schema": ok}}
    if stream is not None:
        content[stream] = {"schema": STRING}
    out: dict[int | str, JSON] = {200: {"description": ok_description, "content": content}}
    for status in statuses:
        out[status] = {
            "description": ERROR_MEANINGS[status],
            "content": {"application/json": {"schema": ERROR_SCHEMAS[style]}},
        }
    return out


# --- the answers, as the providers document them (only what every answer has is required) ---------------

USAGE = _obj([], prompt_tokens=INTEGER, completion_tokens=INTEGER, total_tokens=INTEGER)
CHAT_COMPLETION = _obj(
    ["id", "object", "created", "model", "choices"],
    id=STRING,
    object={"const": "chat.completion"},
    created=INTEGER,
    model=STRING,
    choices={
        "type": "array",
        "items": _obj(["index", "message"], index=INTEGER, message=OBJECT, finish_reason=NULLABLE_STRING),
    },
    usage=USAGE,
)
COMPLETION = _obj(
    ["id", "object", "created", "model", "choices"],
    id=STRING,
    object={"const": "text_completion"},
    created=INTEGER,
    model=STRING,
    choices={"type": "array", "items": _obj(["index", "text"], index=INTEGER, text=STRING)},
    usage=USAGE,
)
RESPONSE = _obj(
    ["id", "object", "created_at", "model", "status", "output"],
    id=STRING,
    object={"const": "response"},
    created_at={"type": "number"},
    model=STRING,
    status=STRING,
    output={"type": "array", "items": OBJECT},
    usage={"type": ["object", "null"]},
)
EMBEDDINGS = _obj(
    ["object", "data", "model"],
    object={"const": "list"},
    data={
        "type": "array",
        "items": _obj(
            ["object", "embedding", "index"],
            object={"const": "embedding"},
            embedding={"anyOf": [{"type": "array", "items": NUMBER}, STRING]},
            index=INTEGER,
        ),
    },
    model=STRING,
    usage=OBJECT,
)
MODEL = _obj(
    ["id", "object", "created", "owned_by"], id=STRING, object={"const": "model"}, created=INTEGER, owned_by=STRING
)
MODEL_LIST = _obj(["object", "data"], object={"const": "list"}, data={"type": "array", "items": MODEL})
MESSAGE = _obj(
    ["id", "type", "role", "content", "model"],
    id=STRING,
    type={"const": "message"},
    role={"const": "assistant"},
    content={"type": "array", "items": _obj(["type"], type=STRING)},
    model=STRING,
    stop_reason=NULLABLE_STRING,
    usage=_obj(["input_tokens", "output_tokens"], input_tokens=INTEGER, output_tokens=INTEGER),
)
TOKEN_COUNT = _obj(["input_tokens"], input_tokens=INTEGER)
OLLAMA_CHAT = _obj(
    ["model", "created_at", "done"],
    model=STRING,
    created_at=STRING,
    message=_obj(["role", "content"], role=STRING, content=STRING),
    done=BOOLEAN,
    done_reason=STRING,
)
OLLAMA_GENERATE = _obj(
    ["model", "created_at", "response", "done"], model=STRING, created_at=STRING, response=STRING, done=BOOLEAN
)
OLLAMA_EMBED = _obj(
    ["model", "embeddings"], model=STRING, embeddings={"type": "array", "items": {"type": "array", "items": NUMBER}}
)
OLLAMA_EMBEDDING = _obj(["embedding"], embedding={"type": "array", "items": NUMBER})
OLLAMA_MODEL = _obj(
    ["name", "model", "modified_at", "size", "digest"],
    name=STRING,
    model=STRING,
    modified_at=STRING,
    size=INTEGER,
    digest=STRING,
    details=OBJECT,
)
OLLAMA_TAGS = _obj(["models"], models={"type": "array", "items": OLLAMA_MODEL})
OLLAMA_PS = _obj(["models"], models={"type": "array", "items": OBJECT})
OLLAMA_SHOW = _obj(
    [],
    modelfile=STRING,
    parameters=STRING,
    template=STRING,
    details=OBJECT,
    model_info=OBJECT,
    capabilities={"type": "array", "items": STRING},
)
OLLAMA_VERSION = _obj(["version"], version=STRING)
