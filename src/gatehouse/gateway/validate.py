"""Gateway request validation, in one place before anything is translated or sent: a malformed field is a
400 that names it, never a 500 further down. Each route checks its body against its surface's schema
(gateway/schemas/: the same models publish the OpenAPI document); what is here is what a schema cannot say, and
the checks relay.py still runs on the bodies it is given."""

from __future__ import annotations

from typing import Any

import orjson

from gatehouse.errors import BadRequest
from gatehouse.gateway.errors import InvalidField, InvalidJson, InvalidMessage, MissingField

JSON = dict[str, Any]
MAX_TOKENS_LIMIT = 2**31 - 1
TEXT_PART_TYPES = frozenset({"text", "input_text", "refusal"})


def _bad(message: str, param: str, error: type[BadRequest] = InvalidField) -> BadRequest:
    return error(message, param=param)


def parse_body(raw: bytes) -> JSON:
    """The JSON object in a request body, or a 400 that says what is wrong."""
    if not raw:
        raise InvalidJson("The request body is empty: send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):
            raise InvalidJson("The JSON body nests arrays and objects more than 1024 levels deep.") from None
        raise InvalidJson(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidJson("The request body must be a JSON object.")
    return body


def require_model(body: JSON) -> str:
    """The `model` field, which every gateway request names."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("Field `model` is required: a model name from GET /v1/models.", "model", MissingField)
    return model


def stream_flag(body: JSON, *, default: bool) -> bool:
    """The `stream` field: true or false (absent: the protocol's default)."""
    value = body.get("stream", default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad("Field `stream` must be true or false.", "stream")
    return value


def _object(body: JSON, name: str) -> None:
    if body.get(name) is not None and not isinstance(body[name], dict):
        raise _bad(f"Field `{name}` must be an object.", name)


def _int(value: Any, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not -2 <= value <= MAX_TOKENS_LIMIT:
        raise _bad(f"Field `{name}` must be an integer (at most {MAX_TOKENS_LIMIT}).", name)


def _content(content: Any, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"`{where}` must be a string or a list of content parts.", where, InvalidMessage)
    for j, part in enumerate(content):
        here = f"{where}.{j}"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(f"`{here}` must be an object with a `type`.", here, InvalidMessage)
        if part["type"] in TEXT_PART_TYPES and not isinstance(part.get("text", part.get("refusal", "")), str):
            raise _bad(f"`{here}.text` must be a string.", f"{here}.text", InvalidMessage)
        if part["type"] == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _bad(f"`{here}.image_url.url` must be a string.", f"{here}.image_url", InvalidMessage)


def require_messages(body: JSON) -> list[JSON]:
    """The `messages` field of a chat request, each message well-formed."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad(
            "Field `messages` is required: a non-empty list of {role, content} objects.", "messages", MissingField
        )
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"`{where}` must be an object with a string `role` and a `content`.", where, InvalidMessage)
        _content(message.get("content"), f"{where}.content")
        calls = message.get("tool_calls")
        if calls is not None and (not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls)):
            raise _bad(f"`{where}.tool_calls` must be a list of objects.", f"{where}.tool_calls", InvalidMessage)
        images = message.get("images")
        if images is not None and (not isinstance(images, list) or not all(isinstance(x, str) for x in images)):
            raise _bad(f"`{where}.images` must be a list of base64 strings.", f"{where}.images", InvalidMessage)
    return messages


def validate_chat(body: JSON) -> None:
    """The optional fields of a chat request (either protocol) have the types their protocols give them."""
    for name in ("stream_options", "response_format", "options"):
        _object(body, name)
    for name in ("max_tokens", "max_completion_tokens"):
        _int(body.get(name), name)
    if isinstance(body.get("options"), dict):
        _int(body["options"].get("num_predict"), "options.num_predict")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise _bad("Field `tools` must be a list of objects.", "tools")
    response_format = body.get("response_format")
    schema = response_format.get("json_schema") if isinstance(response_format, dict) else None
    if schema is not None and not isinstance(schema, dict):
        raise _bad("`response_format.json_schema` must be an object.", "response_format.json_schema")
    fmt = body.get("format")
    if fmt is not None and not isinstance(fmt, (str, dict)):
        raise _bad('Field `format` must be "json" or a JSON schema object.', "format")


def _token(value: Any) -> bool:
    # A token id as JSON has it: an integer, or a float with no fraction (16.0), which JSON Schema calls one too.
    return (isinstance(value, int) and not isinstance(value, bool)) or (type(value) is float and value.is_integer())


def validate_embed_input(body: JSON) -> Any:
    """The `input` of an embeddings request: text, texts, or token arrays."""
    value = body.get("input", body.get("prompt"))
    if value is None:
        raise _bad("Field `input` is required: a string or a list of strings.", "input", MissingField)
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and value
        and (
            all(isinstance(v, str) for v in value)
            or all(_token(v) for v in value)
            or all(isinstance(v, list) and all(_token(t) for t in v) for v in value)
        )
    ):
        return value
    raise _bad("Field `input` must be a string, a non-empty list of strings, or token arrays.", "input")


def validate_dimensions(body: JSON) -> None:
    """`dimensions` of an embeddings request, when given: a positive integer (passed on to the upstream)."""
    value = body.get("dimensions")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise _bad("Field `dimensions` must be a positive integer (the length of each vector).", "dimensions")


def require_responses_input(body: JSON) -> None:
    """A Responses request has `input`, or continues a stored conversation (`previous_response_id`)."""
    if body.get("input") is None and not body.get("previous_response_id"):
        raise _bad("Field `input` is required: a string or a list of input items.", "input", MissingField)
