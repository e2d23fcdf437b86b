"""Go value semantics, so that what a template prints and tests matches Ollama byte for byte.

Python's ``str``, ``json.dumps`` and truthiness each differ from Go's in small ways (float digits,
sorted map keys, ``<>&`` escapes, structs printing as JSON in declaration order, a struct being
true even when empty), and a prompt that is off by one byte changes what the model sees.
"""

from __future__ import annotations

import json as _json
import math
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any


class GoStruct:
    """A Go struct: fields by Go name for the template, JSON by its tags, printed as its JSON.

    Ollama hands templates typed structs (messages, tool calls, tools) whose ``{{ . }}`` prints JSON
    and whose ``json`` keeps declaration order with lower-case tag names; a plain dict would sort.
    """

    __slots__ = ("fields", "tags")

    def __init__(self, fields: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> None:
        self.fields = dict(fields)
        self.tags = dict(tags or {})  # Go name -> "json_name[,omitempty]"; absent: the Go name

    def json_items(self) -> Iterator[tuple[str, Any]]:
        for name, value in self.fields.items():
            key, _, opt = self.tags.get(name, name).partition(",")
            if not (opt == "omitempty" and _empty(value)):
                yield key, value


class JsonMap(dict):  # type: ignore[type-arg]
    """A Go map whose ``String()`` is its JSON (Ollama's tool-call arguments and properties)."""

    ordered = False  # True: JSON keeps insertion order (Ollama's ordered ToolPropertiesMap)


class JsonList(list):  # type: ignore[type-arg]
    """A Go slice whose ``String()`` is its JSON (Ollama's ``.Tools``)."""


def _empty(v: Any) -> bool:
    return v is None or v is False or (not isinstance(v, GoStruct) and hasattr(v, "__len__")
                                        and len(v) == 0) or (type(v) in (int, float) and v == 0)


def truth(v: Any) -> bool:
    """Go's ``truth``: zero numbers, empty strings/slices/maps and nil are false; structs true."""
    return not _empty(v)


def _shortest(f: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(f) and the exponent of its first digit (Go's strconv)."""
    _, digits, exp = Decimal(repr(abs(f))).normalize().as_tuple()
    ds = "".join(map(str, digits))
    return ds, len(ds) + int(exp) - 1


def go_float(f: float, *, for_json: bool = False) -> str:
    """A float64 as Go's ``%v`` (``'g'`` shortest) or ``encoding/json`` prints it."""
    if math.isnan(f) or math.isinf(f):
        if for_json:
            raise ValueError("json: unsupported value")
        return "NaN" if math.isnan(f) else ("+Inf" if f > 0 else "-Inf")
    if f == 0:
        return "0"
    ds, x = _shortest(f)
    sign = "-" if f < 0 else ""
    if (x < -6 or x >= 21) if for_json else (x < -4 or x >= 6):
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        ex = f"-{-x}" if for_json and -10 < x < 0 else f"{'-' if x < 0 else '+'}{abs(x):02d}"
        return f"{sign}{mant}e{ex}"
    dp = x + 1
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{ds}"
    return sign + (ds + "0" * (dp - len(ds)) if dp >= len(ds) else f"{ds[:dp]}.{ds[dp:]}")


def sorted_items(m: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        return sorted(m.items())
    except TypeError:
        return sorted(m.items(), key=lambda kv: str(kv[0]))


def go_json(v: Any) -> str:
    """Go's ``json.Marshal``: compact, map keys sorted, ``<>&`` escaped as ``\\u003c`` and co."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v, for_json=True)
    if isinstance(v, str):
        s = _json.dumps(v, ensure_ascii=False)
        for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                        ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            s = s.replace(ch, esc)
        return s
    if isinstance(v, GoStruct):
        items: Any = v.json_items()
    elif isinstance(v, Mapping):
        items = v.items() if getattr(v, "ordered", False) else sorted_items(v)
    elif isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    else:
        raise TypeError(f"json: unsupported type {type(v).__name__}")
    return "{" + ",".join(f"{go_json(str(k))}:{go_json(x)}" for k, x in items) + "}"


def go_format(v: Any, top: bool = True) -> str:
    """Go's ``fmt`` ``%v`` (a nil at the top prints empty, as with Ollama's ``missingkey=zero``)."""
    if v is None:
        return "" if top else "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, (str, int)):
        return str(v)
    if isinstance(v, (GoStruct, JsonMap, JsonList)):
        return go_json(v)
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{go_format(k, False)}:{go_format(x, False)}"
                                 for k, x in sorted_items(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_format(x, False) for x in v) + "]"
    return str(v)


def go_type(v: Any) -> str:
    names = {bool: "bool", int: "int", float: "float64", str: "string", type(None): "<nil>"}
    return names.get(type(v), "map" if isinstance(v, Mapping) else
                     "slice" if isinstance(v, (list, tuple)) else type(v).__name__)
