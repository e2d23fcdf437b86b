"""The functions a template may call: Go's builtins plus Ollama's own ``FuncMap``.

Library templates call these by name; the set is fixed by Go and Ollama, so the parser rejects
any other name up front, and the failures carry Go's wording so errors read as Ollama's would.
"""

from __future__ import annotations

import datetime as _dt
import json as _json
import re
from collections.abc import Callable, Mapping
from typing import Any

from .values import GoStruct, go_float, go_format, go_json, go_type, truth


class Fail(Exception):
    """An execution error without position; the executor adds the line."""


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise Fail("missing argument for comparison")
    return any(a == b and (isinstance(a, bool) == isinstance(b, bool)) for b in bs)


def _cmp(a: Any, b: Any) -> int:
    num = (int, float)
    if not ((isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool)
             and not isinstance(b, bool)) or (isinstance(a, str) and isinstance(b, str))):
        raise Fail(f"incompatible types for comparison: {go_type(a)} and {go_type(b)}")
    return (a > b) - (a < b)


def _len(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, str):
        return len(v.encode())  # Go counts bytes
    if isinstance(v, (list, tuple, Mapping)):
        return len(v)
    raise Fail(f"len of type {go_type(v)}")


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if v is None or isinstance(v, Mapping):
            v = None if v is None else v.get(k)
        elif isinstance(v, (list, tuple, str)) and isinstance(k, int) and not isinstance(k, bool):
            seq = v.encode() if isinstance(v, str) else v
            if not 0 <= k < len(seq):
                raise Fail(f"error calling index: index out of range: {k}")
            v = seq[k]
        else:
            raise Fail(f"error calling index: cannot index {go_type(v)} with {go_type(k)}")
    return v


def _slice(v: Any, *idx: int) -> Any:
    if isinstance(v, str):
        if len(idx) > 2:
            raise Fail("error calling slice: cannot 3-index slice a string")
        seq: Any = v.encode()
    elif isinstance(v, (list, tuple)):
        seq = v
    else:
        raise Fail(f"error calling slice: can't slice item of type {go_type(v)}")
    if len(idx) > 3:
        raise Fail("error calling slice: too many slice indexes")
    lo, hi = (list(idx) + [0, len(seq)][len(idx):])[:2] if idx else (0, len(seq))
    if not 0 <= lo <= hi <= len(seq):
        raise Fail(f"error calling slice: index out of range: [{lo}:{hi}] with len {len(seq)}")
    out = seq[lo:hi]
    return out.decode(errors="replace") if isinstance(out, bytes) else list(out)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def _printf(fmt: str, *args: Any) -> str:
    """``fmt.Sprintf`` for the common verbs (%s %v %d %q %t %f %e %g %x %X %c %%)."""
    rest = iter(args)

    def one(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        a = next(rest, _printf)
        if a is _printf:
            return f"%!{verb}(MISSING)"
        if verb in "sv":
            s = go_format(a, False)[: int(prec)] if prec and verb == "s" else go_format(a, False)
        elif verb == "q" and isinstance(a, str):
            s = _json.dumps(a, ensure_ascii=False)
        elif verb == "t" and isinstance(a, bool):
            s = go_format(a)
        elif verb in "dxXc" and isinstance(a, int) and not isinstance(a, bool):
            s = {"d": str, "x": "{:x}".format, "X": "{:X}".format, "c": chr}[verb](a)
        elif verb in "xX" and isinstance(a, str):
            s = a.encode().hex() if verb == "x" else a.encode().hex().upper()
        elif verb in "feEgG" and isinstance(a, (int, float)) and not isinstance(a, bool):
            s = go_float(float(a)) if verb in "gG" and not prec else format(
                float(a), f".{6 if prec is None else prec}{verb}")
        else:
            s = f"%!{verb}({go_type(a)}={go_format(a, False)})"
        if width and len(s) < int(width):
            pad = "0" if "0" in flags and "-" not in flags and verb in "dfeEgGxX" else " "
            s = s.ljust(int(width)) if "-" in flags else s.rjust(int(width), pad)
        return s

    out = _VERB.sub(one, fmt)
    extra = list(rest)
    if extra:
        out += "%!(EXTRA " + ", ".join(f"{go_type(a)}={go_format(a, False)}" for a in extra) + ")"
    return out


def _sprint(*args: Any) -> str:
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_format(a, False)
    return out


def _json_func(v: Any) -> str:
    try:
        return go_json(v)
    except (TypeError, ValueError):
        return ""  # Ollama ignores json.Marshal errors


def _ts_type(v: Any) -> str:
    """Ollama's ``ToolProperty.ToTypeScriptType``."""
    if not isinstance(v, GoStruct):
        return "any"
    if v.fields.get("AnyOf"):
        return " | ".join(_ts_type(p) for p in v.fields["AnyOf"])
    t = v.fields.get("Type")
    types = [t] if isinstance(t, str) and t else list(t or [])
    names = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}
    return " | ".join(names.get(x, "any") for x in types) or "any"


FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda v: not truth(v), "len": _len, "index": _index, "slice": _slice,
    "eq": _eq, "ne": lambda a, b: not _eq(a, b), "lt": lambda a, b: _cmp(a, b) < 0,
    "le": lambda a, b: _cmp(a, b) <= 0, "gt": lambda a, b: _cmp(a, b) > 0,
    "ge": lambda a, b: _cmp(a, b) >= 0, "print": _sprint, "printf": _printf,
    "println": lambda *a: " ".join(go_format(x, False) for x in a) + "\n",
    "json": _json_func, "toTypeScriptType": _ts_type,
    "currentDate": lambda *_: _dt.date.today().isoformat(),
    "yesterdayDate": lambda *_: (_dt.date.today() - _dt.timedelta(days=1)).isoformat(),
}
LAZY = {"and", "or"}  # short-circuit: they get unevaluated arguments
