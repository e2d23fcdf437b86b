"""Request bodies decoded the way Go's ``encoding/json`` decodes them, for every endpoint.

Ollama's handlers, native and ``/v1`` alike, decode with Go's decoder and answer its error text
with a 400, so clients and scripts see ``invalid character '}' looking for beginning of object
key string`` or ``json: cannot unmarshal string into Go struct field GenerateRequest.stream of
type bool``. The rules reproduced here: unknown fields are ignored, ``null`` leaves a field at its
default, a wrong type is an error (Go never turns ``"5"`` into 5), data after the first value is
ignored, and an empty body is ``missing request body``.

Each dialect names its Go package and the Go names of the structs that differ from ours
(:class:`GoNames`); the decoding is the same.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..base.errors import InvalidRequest

__all__ = ["NATIVE", "OPENAI", "GoNames", "decode_body", "go_kind", "parse"]

M = TypeVar("M", bound=BaseModel)

_GO_SCALAR = {str: "string", bool: "bool", int: "int", float: "float64"}


@dataclass(frozen=True)
class GoNames:
    """How one Go package names our request types in its error texts."""

    package: str
    structs: dict[str, str] = field(default_factory=dict)  # our class name -> Go struct name
    field_types: dict[str, str] = field(default_factory=dict)  # JSON field -> Go type, where ours differ

    def struct(self, cls: type[BaseModel] | None) -> str:
        name = cls.__name__ if cls else "Request"
        return self.structs.get(name, name)


NATIVE = GoNames(
    "api",
    structs={"EmbeddingsRequest": "EmbeddingRequest"},
    field_types={"keep_alive": "api.Duration", "format": "json.RawMessage", "think": "api.ThinkValue"},
)
OPENAI = GoNames(
    "openai",
    structs={"EmbeddingRequest": "EmbedRequest"},
    field_types={"stop": "interface {}", "content": "interface {}", "response_format": "openai.ResponseFormat"},
)


def decode_body(raw: bytes, cls: type[BaseModel] | None = None, names: GoNames = NATIVE) -> dict[str, Any]:
    """The body as a JSON object; Go's wording for an empty, malformed or non-object body."""
    text = raw.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise InvalidRequest("missing request body")
    try:
        value, _ = json.JSONDecoder().raw_decode(text)  # like Go's Decoder: trailing data ignored
    except json.JSONDecodeError as err:
        raise InvalidRequest(_syntax_error(text, err)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"json: cannot unmarshal {go_kind(value)} into Go value of type {names.package}.{names.struct(cls)}")
    return value


def parse(cls: type[M], body: dict[str, Any], names: GoNames = NATIVE) -> M:
    """Validate ``body`` strictly into one of the API types (nulls mean "not given")."""
    data = {k: v for k, v in body.items() if v is not None}
    if isinstance(data.get("messages"), list):
        data["messages"] = [
            {k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m
            for m in data["messages"]
        ]
    try:
        return cls.model_validate(data, strict=True)
    except ValidationError as exc:
        raise InvalidRequest(_unmarshal_error(cls, exc.errors(include_url=False)[0], names)) from None


def go_kind(value: Any) -> str:
    """The JSON kind Go names in ``cannot unmarshal <kind>``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


# ---- syntax errors ---------------------------------------------------------------------------


def _quote_char(ch: str) -> str:
    """Go's ``quoteChar`` for syntax errors: ``'x'``, ``'\\''``, ``'"'``, ``'\\n'``."""
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return "'" + json.dumps(ch)[1:-1] + "'"


def _syntax_error(doc: str, err: json.JSONDecodeError) -> str:
    """The Go decoder's wording for a JSON syntax error."""
    if err.pos >= len(doc) or err.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    ch = doc[err.pos]
    if err.msg.startswith("Invalid control character"):
        return f"invalid character {_quote_char(ch)} in string literal"
    context = {
        "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
        "Expecting ':' delimiter": "after object key",
        "Expecting ',' delimiter": "after object key:value pair" if _innermost(doc, err.pos) == "{" else "after array element",
    }.get(err.msg, "looking for beginning of value")
    return f"invalid character {_quote_char(ch)} {context}"


def _innermost(doc: str, pos: int) -> str:
    """The innermost open bracket at ``pos`` (strings skipped): which Go message applies."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in doc[:pos]:
        if in_string:
            escaped = not escaped and ch == "\\"
            if ch == '"' and not escaped:
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


# ---- type errors -----------------------------------------------------------------------------


def _go_type(annotation: Any, names: GoNames) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _go_type(args[0], names) if len(args) == 1 else "interface {}"
    if origin is list:
        return "[]" + (_go_type(args[0], names) if args else "interface {}")
    if origin is dict:
        return "map[string]" + (_go_type(args[1], names) if len(args) == 2 else "interface {}")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"{names.package}.{names.struct(annotation)}"
    return _GO_SCALAR.get(annotation, "interface {}")


def _strip_optional(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _unmarshal_error(cls: type[BaseModel], error: dict[str, Any], names: GoNames) -> str:
    """``json: cannot unmarshal <kind> into Go struct field <Struct>.<path> of type <type>``."""
    path: list[str] = []
    annotation: Any = cls
    for part in error["loc"]:
        current = _strip_optional(annotation)
        if isinstance(part, int):  # an element of a list
            args = typing.get_args(current)
            annotation = args[0] if typing.get_origin(current) is list and args else Any
            continue
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        if part not in fields:
            break  # a union member's tag, not a field
        path.append(fields[part].alias or part)
        annotation = fields[part].annotation
    go_type = (names.field_types.get(path[-1]) if path else None) or _go_type(annotation, names)
    return (f"json: cannot unmarshal {go_kind(error.get('input'))} into Go struct field "
            f"{names.struct(cls)}.{'.'.join(path)} of type {go_type}")
