"""What every surface's request schema shares: an open model (fields the providers add later pass through), strict
types (a string is not a number), and the check that turns the first violation into a 400 naming the field."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from gatehouse.errors import BadRequest
from gatehouse.gateway.errors import InvalidField, InvalidMessage, MissingField

JSON = dict[str, Any]
_INSTANCE = re.compile(r"a valid dictionary or instance of \w+|a valid dictionary")
MAX_ITEMS = 10_000  # messages (or input items) in one request: each costs work before the upstream sees it
MAX_INT = 2**31 - 1  # the largest token limit Gatehouse passes on (a 32-bit signed integer, as upstreams parse it)
# Fields whose errors are about a message or a turn: answered with invalid_message.
MESSAGE_FIELDS = frozenset({"messages", "input", "system"})


class Open(BaseModel):
    """A request object: declared fields typed and checked, undeclared ones allowed and passed on untouched (the
    schema says additionalProperties: true; validation ignores them, which costs nothing)."""

    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"additionalProperties": True})


def _integral(value: Any) -> Any:
    # JSON has one number type: 16.0 is an integer to JSON Schema (and to the providers), never True.
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# The default of a field that may be left out but not sent as null (the provider's SDK types it without Optional):
# absent, it is None to the model; null is refused, and the schema shows no null.
NOT_SENT: Any = None

# Shared field types.
INTEGRAL = BeforeValidator(_integral)  # after the constraints, which then stay in the JSON schema
Int = Annotated[int, INTEGRAL]
Model = Annotated[str, Field(pattern=r"\S", description="A model name from GET /v1/models (or /api/tags).")]
Limit = Annotated[int, Field(ge=1, le=MAX_INT), INTEGRAL]
Probability = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
Temperature = Annotated[float, Field(ge=0, le=2)]
StrMap = dict[str, str]
AnyObject = dict[str, Any]


class Checker:
    """Validates a request body against its model: None when valid, else a 400 naming the first bad field.

    `required` holds the message for a missing (or empty) required field, in the words the API has always used;
    `hints` what a field must be, where pydantic's own words would be vague (a value matching no alternative)."""

    def __init__(
        self,
        model: type[BaseModel],
        required: dict[str, str],
        hints: dict[str, str] | None = None,
        *,
        longest: dict[str, int] | None = None,
    ) -> None:
        self.model = model
        self.adapter: TypeAdapter[Any] = TypeAdapter(model)
        self.required = required
        self.hints = hints or {}
        self.longest = longest or {}
        # Top-level integer fields (and integer options): 16.0 is taken for 16, and made 16 in the body, so that
        # nothing after this check (the quota's completion limit, an upstream) sees a float.
        self.integers = _integer_fields(model)

    def __call__(self, body: JSON) -> None:
        # Before any item is looked at: a list of a million messages is refused in constant time.
        for name, most in self.longest.items():
            value = body.get(name)
            if isinstance(value, list) and len(value) > most:
                raise InvalidField(
                    f"Field `{name}` has {len(value)} items: Gatehouse takes at most {most} in one request.",
                    param=name,
                )
        try:
            self.adapter.validate_python(body)
        except ValidationError as exc:
            raise self._error(body, exc.errors(include_url=False, include_input=False)) from None
        for name, inner in self.integers:
            holder = body if inner is None else body.get(name)
            if isinstance(holder, dict):
                key = name if inner is None else inner
                if type(holder.get(key)) is float:
                    holder[key] = int(holder[key])

    def _error(self, body: JSON, errors: list[Any]) -> BadRequest:
        param, messages = _first_problem(body, errors)
        top = param.split(".", 1)[0]
        if param in self.required and (
            param not in body or body[param] is None or body[param] == [] or body[param] == ""
        ):
            return MissingField(self.required[param], param=param)
        hint = self.hints.get(param)
        said = list(dict.fromkeys(messages))
        detail = f"must be {hint}" if hint else said[0] if said == ["is required"] else "is invalid: " + "; ".join(said)
        if top in MESSAGE_FIELDS and "." in param:
            return InvalidMessage(f"`{param}` {detail}.", param=param)
        return InvalidField(f"Field `{param}` {detail}.", param=param)


def _integer_fields(model: type[BaseModel]) -> tuple[tuple[str, str | None], ...]:
    """(field, None) for each integer field of `model`, and (field, option) for each integer of an object field."""

    def is_integer(schema: Any) -> bool:
        return schema.get("type") == "integer" or any(s.get("type") == "integer" for s in schema.get("anyOf", ()))

    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    found: list[tuple[str, str | None]] = []
    for name, prop in schema.get("properties", {}).items():
        if is_integer(prop):
            found.append((name, None))
        for ref in [prop.get("$ref"), *(s.get("$ref") for s in prop.get("anyOf", ()))]:
            if isinstance(ref, str):
                inner = defs.get(ref.rsplit("/", 1)[-1], {})
                found.extend((name, option) for option, sub in inner.get("properties", {}).items() if is_integer(sub))
    return tuple(found)


def _indexes(here: Any, part: Any) -> bool:
    """Whether `part` of an error location is a key or an index of the value `here` (else a union's tag)."""
    if isinstance(here, dict):
        return isinstance(part, str) and part in here
    return isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here)


def _walk(body: Any, loc: tuple[Any, ...], missing: bool) -> tuple[list[str], int | None]:
    """The part of a pydantic error location that indexes into the body (union tags left out), and where the first
    tag was (the union the error went through), if any."""
    path: list[str] = []
    here = body
    first_tag: int | None = None
    for i, part in enumerate(loc):
        if _indexes(here, part):
            here = here[part]
        elif missing and i == len(loc) - 1 and isinstance(part, str):
            pass  # the missing key itself
        else:
            if first_tag is None:
                first_tag = len(path)
            continue
        path.append(str(part))
    return path, first_tag


def _first_problem(body: JSON, errors: list[Any]) -> tuple[str, list[str]]:
    """The field to name and what is wrong with it. Where a value matches none of a union's alternatives and
    several got some way into it, the value itself is named; where one alternative got further than the others,
    the place deep inside it is."""
    walked = []
    for err in errors:
        path, tag = _walk(body, tuple(err.get("loc", ())), err.get("type") == "missing")
        walked.append((path, tag, err))
    # The first top-level field with a problem (pydantic reports them in declaration order).
    first = walked[0][0][:1]
    group = [w for w in walked if w[0][:1] == first]
    deepest = max(group, key=lambda w: len(w[0]))
    path, tag, _ = deepest
    if tag is not None:
        union = path[:tag]
        deep_branches = {tuple(w[2]["loc"])[: _tag_index(w[2]["loc"], body)] for w in group if len(w[0]) > tag}
        if len(deep_branches) > 1:
            path = union
    param = ".".join(path) or "body"
    messages = [_message(w[2]) for w in group if ".".join(w[0]) == param] or [_message(deepest[2])]
    # "role" is the message's: the message is named, as it always was.
    if path and path[-1] == "role" and len(path) > 1:
        param = ".".join(path[:-1])
        messages = [f"`role` {m}" for m in messages]
    return param, messages


def _tag_index(loc: Any, body: JSON) -> int:
    """The position just past the first union tag in a pydantic location (its branch)."""
    here: Any = body
    for i, part in enumerate(loc):
        if _indexes(here, part):
            here = here[part]
        else:
            return i + 1
    return len(loc)


def _message(error: Any) -> str:
    kind = error.get("type")
    if kind == "missing":
        return "is required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return "its `type` is missing or not one the API documents"
    msg = _INSTANCE.sub("an object", str(error.get("msg", "invalid")))
    return msg.removeprefix("Input ").removeprefix("Value error, ")
