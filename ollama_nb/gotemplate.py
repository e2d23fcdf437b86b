"""Go ``text/template`` for Modelfile ``TEMPLATE`` text, plus Ollama's prompt-building rules.

Why our own: Modelfiles (and the Ollama library) carry prompt templates in Go template syntax and
we must render them byte-for-byte as Ollama's ``template/template.go`` does, in pure Python. This is
a parser + tree-walking executor for the subset those templates use: actions with ``{{-``/``-}}``
trimming, comments, ``if``/``else if``/``else``/``with``/``range`` (with ``break``/``continue``),
variables (``:=``, ``=``, ``$``), fields, parentheses, pipelines, literals and the builtin functions
(``and or not len index slice eq ne lt le gt ge print printf``) plus Ollama's ``json``,
``currentDate``, ``yesterdayDate`` and ``toTypeScriptType``. ``define``/``template``/``block`` are
rejected. Deliberate leniency: a missing key or a field of a missing value is empty (never
``<no value>``), and ``eq`` on mismatched types is simply false.
"""

from __future__ import annotations

import ast
import datetime as _dt
import json as _json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Union

from ollama_nb.errors import ModelfileError

__all__ = ["GoStruct", "GoTemplate", "JsonMap", "TemplateError", "go_json", "references_messages",
           "render_prompt"]


class TemplateError(ModelfileError):
    """A template that does not parse or execute; the text follows Go's ``template: :LINE: why``."""


# ---- values with Go semantics ----------------------------------------------------------------


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


class _JsonList(list):  # type: ignore[type-arg]
    """A Go slice whose ``String()`` is its JSON (Ollama's ``.Tools``)."""


def _empty(v: Any) -> bool:
    return v is None or v is False or (not isinstance(v, GoStruct) and hasattr(v, "__len__")
                                        and len(v) == 0) or (type(v) in (int, float) and v == 0)


def _truth(v: Any) -> bool:
    """Go's ``truth``: zero numbers, empty strings/slices/maps and nil are false; structs true."""
    return not _empty(v)


def _shortest(f: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(f) and the exponent of its first digit (Go's strconv)."""
    _, digits, exp = Decimal(repr(abs(f))).normalize().as_tuple()
    ds = "".join(map(str, digits))
    return ds, len(ds) + int(exp) - 1


def _go_float(f: float, *, for_json: bool = False) -> str:
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


def _sorted_items(m: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
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
        return _go_float(v, for_json=True)
    if isinstance(v, str):
        s = _json.dumps(v, ensure_ascii=False)
        for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                        ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            s = s.replace(ch, esc)
        return s
    if isinstance(v, GoStruct):
        items: Any = v.json_items()
    elif isinstance(v, Mapping):
        items = v.items() if getattr(v, "ordered", False) else _sorted_items(v)
    elif isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    else:
        raise TypeError(f"json: unsupported type {type(v).__name__}")
    return "{" + ",".join(f"{go_json(str(k))}:{go_json(x)}" for k, x in items) + "}"


def _fmt(v: Any, top: bool = True) -> str:
    """Go's ``fmt`` ``%v`` (a nil at the top prints empty, as with Ollama's ``missingkey=zero``)."""
    if v is None:
        return "" if top else "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, (str, int)):
        return str(v)
    if isinstance(v, (GoStruct, JsonMap, _JsonList)):
        return go_json(v)
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{_fmt(k, False)}:{_fmt(x, False)}"
                                 for k, x in _sorted_items(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt(x, False) for x in v) + "]"
    return str(v)


def _go_type(v: Any) -> str:
    names = {bool: "bool", int: "int", float: "float64", str: "string", type(None): "<nil>"}
    return names.get(type(v), "map" if isinstance(v, Mapping) else
                     "slice" if isinstance(v, (list, tuple)) else type(v).__name__)


# ---- builtin functions -----------------------------------------------------------------------


class _Fail(Exception):
    """An execution error without position; the executor adds the line."""


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise _Fail("missing argument for comparison")
    return any(a == b and (isinstance(a, bool) == isinstance(b, bool)) for b in bs)


def _cmp(a: Any, b: Any) -> int:
    num = (int, float)
    if not ((isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool)
             and not isinstance(b, bool)) or (isinstance(a, str) and isinstance(b, str))):
        raise _Fail(f"incompatible types for comparison: {_go_type(a)} and {_go_type(b)}")
    return (a > b) - (a < b)


def _len(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, str):
        return len(v.encode())  # Go counts bytes
    if isinstance(v, (list, tuple, Mapping)):
        return len(v)
    raise _Fail(f"len of type {_go_type(v)}")


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if v is None or isinstance(v, Mapping):
            v = None if v is None else v.get(k)
        elif isinstance(v, (list, tuple, str)) and isinstance(k, int) and not isinstance(k, bool):
            seq = v.encode() if isinstance(v, str) else v
            if not 0 <= k < len(seq):
                raise _Fail(f"error calling index: index out of range: {k}")
            v = seq[k]
        else:
            raise _Fail(f"error calling index: cannot index {_go_type(v)} with {_go_type(k)}")
    return v


def _slice(v: Any, *idx: int) -> Any:
    if isinstance(v, str):
        if len(idx) > 2:
            raise _Fail("error calling slice: cannot 3-index slice a string")
        seq: Any = v.encode()
    elif isinstance(v, (list, tuple)):
        seq = v
    else:
        raise _Fail(f"error calling slice: can't slice item of type {_go_type(v)}")
    if len(idx) > 3:
        raise _Fail("error calling slice: too many slice indexes")
    lo, hi = (list(idx) + [0, len(seq)][len(idx):])[:2] if idx else (0, len(seq))
    if not 0 <= lo <= hi <= len(seq):
        raise _Fail(f"error calling slice: index out of range: [{lo}:{hi}] with len {len(seq)}")
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
            s = _fmt(a, False)[: int(prec)] if prec and verb == "s" else _fmt(a, False)
        elif verb == "q" and isinstance(a, str):
            s = _json.dumps(a, ensure_ascii=False)
        elif verb == "t" and isinstance(a, bool):
            s = _fmt(a)
        elif verb in "dxXc" and isinstance(a, int) and not isinstance(a, bool):
            s = {"d": str, "x": "{:x}".format, "X": "{:X}".format, "c": chr}[verb](a)
        elif verb in "xX" and isinstance(a, str):
            s = a.encode().hex() if verb == "x" else a.encode().hex().upper()
        elif verb in "feEgG" and isinstance(a, (int, float)) and not isinstance(a, bool):
            s = _go_float(float(a)) if verb in "gG" and not prec else format(
                float(a), f".{6 if prec is None else prec}{verb}")
        else:
            s = f"%!{verb}({_go_type(a)}={_fmt(a, False)})"
        if width and len(s) < int(width):
            pad = "0" if "0" in flags and "-" not in flags and verb in "dfeEgGxX" else " "
            s = s.ljust(int(width)) if "-" in flags else s.rjust(int(width), pad)
        return s

    out = _VERB.sub(one, fmt)
    extra = list(rest)
    if extra:
        out += "%!(EXTRA " + ", ".join(f"{_go_type(a)}={_fmt(a, False)}" for a in extra) + ")"
    return out


def _sprint(*args: Any) -> str:
    out = ""
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out += " "
        out += _fmt(a, False)
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


_FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda v: not _truth(v), "len": _len, "index": _index, "slice": _slice,
    "eq": _eq, "ne": lambda a, b: not _eq(a, b), "lt": lambda a, b: _cmp(a, b) < 0,
    "le": lambda a, b: _cmp(a, b) <= 0, "gt": lambda a, b: _cmp(a, b) > 0,
    "ge": lambda a, b: _cmp(a, b) >= 0, "print": _sprint, "printf": _printf,
    "println": lambda *a: " ".join(_fmt(x, False) for x in a) + "\n",
    "json": _json_func, "toTypeScriptType": _ts_type,
    "currentDate": lambda *_: _dt.date.today().isoformat(),
    "yesterdayDate": lambda *_: (_dt.date.today() - _dt.timedelta(days=1)).isoformat(),
}
_LAZY = {"and", "or"}  # short-circuit: they get unevaluated arguments
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template",
             "block"}


# ---- syntax tree -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    idents: tuple[str, ...]


@dataclass(frozen=True)
class _Var:
    name: str
    idents: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Lit:
    value: Any


@dataclass(frozen=True)
class _Func:
    name: str


@dataclass(frozen=True)
class _Dot:
    pass


@dataclass(frozen=True)
class _Chain:
    node: _Pipe
    idents: tuple[str, ...]


@dataclass(frozen=True)
class _Pipe:
    line: int
    decl: tuple[str, ...]
    is_assign: bool
    cmds: tuple[tuple[_Arg, ...], ...]


_Arg = Union[_Field, _Var, _Lit, _Func, _Dot, _Chain, _Pipe]


@dataclass(frozen=True)
class _Action:
    pipe: _Pipe


@dataclass(frozen=True)
class _Branch:
    kind: str  # "if" | "with" | "range"
    pipe: _Pipe
    body: tuple[_Node, ...]
    orelse: tuple[_Node, ...] | None


@dataclass(frozen=True)
class _Jump:
    kind: str  # "break" | "continue"


_Node = Union[str, _Action, _Branch, _Jump]


# ---- lexer and parser ------------------------------------------------------------------------

_SPACE = " \t\r\n"
_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+) | (?P<op>:=|[=|(),]) | (?P<raw>`[^`]*`) | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+
        |(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?))
  | (?P<field>\.\w+) | (?P<dot>\.) | (?P<var>\$\w*) | (?P<ident>[^\W\d]\w*)
""", re.X)


@dataclass
class _Tok:
    kind: str
    value: Any
    spaced: bool  # whitespace before it: ``$x .F`` is two operands, ``$x.F`` one


def _err(line: int, msg: str) -> TemplateError:
    return TemplateError(f"template: :{line}: {msg}")


def _literal(kind: str, text: str, line: int) -> Any:
    try:
        if kind == "raw":
            return text[1:-1].replace("\r", "")
        if kind in ("str", "char"):
            if any(c not in "abfnrtv\\\"'01234567xuU" for c in re.findall(r"\\(.)", text)):
                raise ValueError("unknown escape sequence")
            s = ast.literal_eval(text if kind == "str" else '"' + text[1:-1] + '"')
            if kind == "char" and len(s) != 1:
                raise ValueError
            return s if kind == "str" else ord(s)
        t = text.replace("_", "")
        if re.fullmatch(r"[+-]?0[0-7]+", t):
            return int(t, 8)
        if re.search(r"[.eE]", t) and not re.match(r"[+-]?0[xX]", t):
            return float(t)
        return int(t, 0)
    except (ValueError, SyntaxError):
        what = "number" if kind == "num" else "quoted string"
        raise _err(line, f"bad {what} syntax: {text}") from None


def _lex(src: str) -> list[str | tuple[int, list[_Tok]]]:
    """Split into text and actions (token lists), applying ``{{-``/``-}}`` trimming."""
    items: list[str | tuple[int, list[_Tok]]] = []
    pos, trim_next = 0, False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            if text:
                items.append(text)
            return items
        line = src.count("\n", 0, start) + 1
        pos = start + 2
        if src[pos:pos + 1] == "-" and src[pos + 1:pos + 2] in tuple(_SPACE):
            text, pos = text.rstrip(_SPACE), pos + 2
        if text:
            items.append(text)
        if src.startswith("/*", pos):  # comment: must close right before the delimiter
            end = src.find("*/", pos + 2)
            if end < 0:
                raise _err(line, "unclosed comment")
            pos = end + 2
            trim_next = src[pos:pos + 1] in tuple(_SPACE) and src.startswith("-}}", pos + 1)
            pos += 2 if trim_next else 0
            if not src.startswith("}}", pos):
                raise _err(line, "comment ends before closing delimiter")
            pos += 2
            continue
        toks: list[_Tok] = []
        spaced = False
        while True:
            if pos >= len(src):
                raise _err(line, "unclosed action")
            if src.startswith("}}", pos):
                pos, trim_next = pos + 2, False
                break
            m = _TOKEN.match(src, pos)
            if not m:
                raise _err(line, "unterminated quoted string" if src[pos] in "\"'`" else
                           f"unrecognized character in action: {src[pos]!r}")
            kind, text = m.lastgroup or "", m.group()
            pos = m.end()
            if kind == "ws":
                if src.startswith("-}}", pos):  # " -}}": trim the text that follows
                    pos, trim_next = pos + 3, True
                    break
                spaced = True
                continue
            value: Any = text
            if kind in ("raw", "str", "char", "num"):
                kind, value = "lit", _literal(kind, text, line)
            elif kind == "ident" and text in ("true", "false", "nil"):
                kind, value = "lit", {"true": True, "false": False, "nil": None}[text]
            elif kind == "ident" and text in _KEYWORDS:
                kind = "kw"
            elif kind == "field":
                value = text[1:]
            toks.append(_Tok(kind, value, spaced))
            spaced = False
        items.append((line, toks))


class _Parser:
    def __init__(self, src: str) -> None:
        self.items = _lex(src)
        self.i = 0
        self.scopes: list[set[str]] = [{"$"}]
        self.loops = 0
        self.line = 1
        self.toks: list[_Tok] = []
        self.t = 0

    def error(self, msg: str) -> TemplateError:
        return _err(self.line, msg)

    def peek(self, k: int = 0) -> _Tok | None:
        return self.toks[self.t + k] if self.t + k < len(self.toks) else None

    def expect_end(self, what: str) -> None:
        if (tok := self.peek()) is not None:
            raise self.error(f"unexpected {tok.value!r} in {what}")

    def parse_list(self, ends: set[str]) -> tuple[tuple[_Node, ...], str | None]:
        nodes: list[_Node] = []
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, str):
                nodes.append(item)
                continue
            self.line, self.toks, self.t = item[0], item[1], 0
            first = self.peek()
            if first is None:
                raise self.error("missing value for command")
            if first.kind == "kw":
                self.t += 1
                kw = first.value
                if kw in ("end", "else"):
                    if kw not in ends:
                        raise self.error(f"unexpected {{{{{kw}}}}}")
                    return tuple(nodes), kw
                if kw in ("if", "with", "range"):
                    nodes.append(self.parse_branch(kw))
                elif kw in ("break", "continue"):
                    if not self.loops:
                        raise self.error(f"{{{{{kw}}}}} outside {{{{range}}}}")
                    self.expect_end(kw)
                    nodes.append(_Jump(kw))
                else:
                    raise self.error(f"{{{{{kw}}}}} is not supported")
                continue
            pipe = self.parse_pipe(decl_ok=1)
            self.expect_end("command")
            nodes.append(_Action(pipe))
        if ends:
            raise self.error("unexpected EOF")
        return tuple(nodes), None

    def parse_branch(self, kind: str) -> _Branch:
        self.scopes.append(set())
        pipe = self.parse_pipe(decl_ok=2 if kind == "range" else 1)
        self.expect_end(kind)
        self.loops += kind == "range"
        body, end = self.parse_list({"end", "else"})
        self.loops -= kind == "range"
        orelse: tuple[_Node, ...] | None = None
        if end == "else":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "kw" and nxt.value in ("if", "with"):
                self.t += 1
                orelse = (self.parse_branch(nxt.value),)  # "else if" shares our {{end}}
            else:
                self.expect_end("else")
                orelse, _ = self.parse_list({"end"})
        self.expect_end("end")
        self.scopes.pop()
        return _Branch(kind, pipe, body, orelse)

    def parse_pipe(self, decl_ok: int = 0, paren: bool = False) -> _Pipe:
        decl: list[str] = []
        is_assign = False
        k = 0
        while decl_ok and (tok := self.peek(k)) is not None and tok.kind == "var":
            op = self.peek(k + 1)
            if op is None or op.kind != "op" or op.value not in (":=", "=", ","):
                break
            decl.append(tok.value)
            k += 2
            if op.value != ",":
                is_assign = op.value == "="
                break
            if len(decl) >= decl_ok:
                raise self.error("too many declarations")
        if decl and self.toks[self.t + k - 1].value == ",":
            raise self.error("missing := after range variables")
        self.t += k
        for name in decl:
            if not is_assign:
                self.scopes[-1].add(name)
            elif not any(name in s for s in self.scopes):
                raise self.error(f"undefined variable {name!r}".replace("'", '"'))
        cmds: list[tuple[_Arg, ...]] = []
        while True:
            args: list[_Arg] = []
            while (tok := self.peek()) is not None and not (
                    tok.kind == "op" and tok.value in ("|", ")")):
                args.append(self.parse_operand())
            if not args:
                raise self.error("missing value for command")
            if not isinstance(args[0], _Func) and (len(args) > 1 or cmds):
                raise self.error(f"can't give argument to non-function {_show(args[0])}")
            if isinstance(args[0], _Lit) and args[0].value is None and len(args) == 1:
                raise self.error("nil is not a command")
            cmds.append(tuple(args))
            tok = self.peek()
            if tok is None or tok.value != "|":
                break
            self.t += 1
        if paren != (tok is not None and tok.kind == "op" and tok.value == ")"):
            raise self.error("unclosed left paren" if paren else "unexpected right paren")
        self.t += paren
        return _Pipe(self.line, tuple(decl), is_assign, tuple(cmds))

    def parse_operand(self) -> _Arg:
        tok = self.peek()
        assert tok is not None
        self.t += 1
        node: _Arg
        if tok.kind == "ident":
            if tok.value not in _FUNCS and tok.value not in _LAZY:
                raise self.error(f'function "{tok.value}" not defined')
            node = _Func(tok.value)
        elif tok.kind == "field":
            node = _Field((tok.value,))
        elif tok.kind == "var":
            if not any(tok.value in s for s in self.scopes):
                raise self.error(f'undefined variable "{tok.value}"')
            node = _Var(tok.value)
        elif tok.kind == "dot":
            node = _Dot()
        elif tok.kind == "lit":
            node = _Lit(tok.value)
        elif tok.value == "(":
            node = self.parse_pipe(paren=True)
        else:
            raise self.error(f"unexpected {tok.value!r} in operand")
        fields: list[str] = []
        while (nxt := self.peek()) is not None and nxt.kind == "field" and not nxt.spaced:
            fields.append(nxt.value)
            self.t += 1
        if not fields:
            return node
        if isinstance(node, _Field):
            return _Field(node.idents + tuple(fields))
        if isinstance(node, _Var):
            return _Var(node.name, node.idents + tuple(fields))
        if not isinstance(node, _Pipe):
            raise self.error(f"unexpected . after term {tok.value!r}")
        return _Chain(node, tuple(fields))


def _show(a: _Arg) -> str:
    """Source-like text of an operand, for error messages."""
    if isinstance(a, _Field):
        return "." + ".".join(a.idents)
    if isinstance(a, _Var):
        return ".".join((a.name, *a.idents))
    if isinstance(a, _Lit):
        return _json.dumps(a.value) if isinstance(a.value, str) else _fmt(a.value, False)
    return "." if isinstance(a, _Dot) else "(...)"


def _identifiers(nodes: Sequence[Any]) -> Iterator[str]:
    """Field and variable names, as Ollama's ``Template.Vars`` collects them (lower-cased)."""
    for n in nodes:
        if isinstance(n, _Action):
            yield from _identifiers([n.pipe])
        elif isinstance(n, _Branch):
            yield from _identifiers([n.pipe, *n.body, *(n.orelse or ())])
        elif isinstance(n, _Pipe):
            yield from _identifiers([a for cmd in n.cmds for a in cmd])
        elif isinstance(n, _Field):
            yield from (i.lower() for i in n.idents)
        elif isinstance(n, _Var):
            yield from (i.lower() for i in (n.name, *n.idents))


def _cut_at_response(nodes: tuple[_Node, ...]) -> tuple[_Node, ...]:
    """Ollama's ``deleteNode``: keep the tree up to and including the first ``.Response`` field.

    Everything after it is dropped, so a legacy template's final turn ends where the model's reply
    starts. (Where Go would panic on an ``{{else}}`` after the cut, the else branch is dropped.)
    """
    cut = False

    def gone(n: Any) -> bool:
        nonlocal cut
        if isinstance(n, _Field) and "Response" in n.idents:
            cut = True
            return False
        return cut

    def walk(n: Any) -> Any:
        if gone(n):
            return None
        if isinstance(n, tuple):
            return tuple(c for c in map(walk, n) if c is not None)
        if isinstance(n, _Branch):
            body = walk(n.body)
            orelse = None if n.orelse is None else walk(n.orelse)
            return _Branch(n.kind, n.pipe, body, orelse)
        if isinstance(n, _Action):
            pipe = walk(n.pipe)
            return None if pipe is None else _Action(pipe)
        if isinstance(n, _Pipe):
            cmds = []
            for cmd in n.cmds:
                args = tuple(a for a in map(walk, cmd) if a is not None)
                if not args:
                    return None
                cmds.append(args)
            return _Pipe(n.line, n.decl, n.is_assign, tuple(cmds))
        return n

    return walk(nodes) or ()


# ---- executor --------------------------------------------------------------------------------


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Exec:
    def __init__(self, root: Any) -> None:
        self.vars: list[list[Any]] = [["$", root]]
        self.out: list[str] = []
        self.line = 1

    def walk(self, nodes: Sequence[_Node], dot: Any) -> None:
        for n in nodes:
            if isinstance(n, str):
                self.out.append(n)
            elif isinstance(n, _Action):
                value = self.pipe(n.pipe, dot)
                if not n.pipe.decl:
                    self.out.append(_fmt(value))
            elif isinstance(n, _Branch):
                mark = len(self.vars)
                try:
                    self.branch(n, dot)
                finally:
                    del self.vars[mark:]
            else:
                raise _Break() if n.kind == "break" else _Continue()

    def branch(self, n: _Branch, dot: Any) -> None:
        if n.kind != "range":
            value = self.pipe(n.pipe, dot)
            if _truth(value):
                self.walk(n.body, value if n.kind == "with" else dot)
            elif n.orelse is not None:
                self.walk(n.orelse, dot)
            return
        value = self.pipe(_Pipe(n.pipe.line, (), False, n.pipe.cmds), dot)
        if isinstance(value, Mapping):
            pairs: list[tuple[Any, Any]] = _sorted_items(value)
        elif isinstance(value, (list, tuple)):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(n.pipe.decl) > 1:
                raise _Fail("can't use int to iterate over more than one variable")
            pairs = [(i, i) for i in range(value)]
        elif value is None:
            pairs = []
        else:
            raise _Fail(f"range can't iterate over {_fmt(value)}")
        decl = n.pipe.decl
        if not n.pipe.is_assign:
            self.vars.extend([name, None] for name in decl)
        for key, elem in pairs:
            for name, v in zip(decl, (elem,) if len(decl) == 1 else (key, elem)):
                self.set_var(name, v)
            mark = len(self.vars)
            try:
                self.walk(n.body, elem)
            except _Break:
                break
            except _Continue:
                pass
            finally:
                del self.vars[mark:]
        if not pairs and n.orelse is not None:
            self.walk(n.orelse, dot)

    def set_var(self, name: str, value: Any) -> None:
        for slot in reversed(self.vars):
            if slot[0] == name:
                slot[1] = value
                return
        raise _Fail(f'undefined variable "{name}"')

    def pipe(self, pipe: _Pipe, dot: Any) -> Any:
        self.line = pipe.line
        value: Any = None
        for i, cmd in enumerate(pipe.cmds):
            value = self.command(cmd, dot, (value,) if i else ())
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append([name, value])
        return value

    def command(self, cmd: tuple[_Arg, ...], dot: Any, final: tuple[Any, ...]) -> Any:
        head = cmd[0]
        if not isinstance(head, _Func):
            return self.arg(head, dot)
        if head.name in _LAZY:  # and/or: return the deciding argument, evaluating no further
            args: list[Any] = [lambda a=a: self.arg(a, dot) for a in cmd[1:]]
            args += [lambda v=v: v for v in final]
            if not args:
                raise _Fail(f"wrong number of args for {head.name}: want at least 1 got 0")
            v = None
            for get in args:
                v = get()
                if _truth(v) == (head.name == "or"):
                    return v
            return v
        values = [self.arg(a, dot) for a in cmd[1:]] + list(final)
        try:
            return _FUNCS[head.name](*values)
        except _Fail:
            raise
        except TypeError as e:
            raise _Fail(f"error calling {head.name}: {e}") from None

    def arg(self, a: _Arg, dot: Any) -> Any:
        if isinstance(a, _Lit):
            return a.value
        if isinstance(a, _Dot):
            return dot
        if isinstance(a, _Field):
            return self.fields(dot, a.idents)
        if isinstance(a, _Var):
            for name, value in reversed(self.vars):
                if name == a.name:
                    return self.fields(value, a.idents)
            raise _Fail(f'undefined variable "{a.name}"')
        if isinstance(a, _Chain):
            return self.fields(self.pipe(a.node, dot), a.idents)
        if isinstance(a, _Pipe):
            return self.pipe(a, dot)
        return self.command((a,), dot, ())  # a function as an argument is called bare

    @staticmethod
    def fields(value: Any, idents: Sequence[str]) -> Any:
        for name in idents:
            if value is None:
                return None  # lenient: a field of a missing value is missing too
            if isinstance(value, GoStruct):
                value = value.fields.get(name)
            elif isinstance(value, Mapping):
                value = value.get(name)
            elif isinstance(value, (str, int, float, bool, list, tuple)) or name.startswith("_"):
                raise _Fail(f"can't evaluate field {name} in type {_go_type(value)}")
            else:
                value = getattr(value, name, None)
        return value


class GoTemplate:
    """A parsed Go ``text/template``: parse once, ``execute`` many times (it is immutable)."""

    def __init__(self, source: str) -> None:
        """Parse ``source``; raises :class:`TemplateError` (a ``ModelfileError``) on bad syntax."""
        self.source = source
        self._nodes, _ = _Parser(source).parse_list(set())
        self._cut: tuple[_Node, ...] | None = None

    @classmethod
    def parse(cls, source: str) -> GoTemplate:
        """Parse ``source`` (same as the constructor; reads better at call sites)."""
        return cls(source)

    @property
    def identifiers(self) -> frozenset[str]:
        """Lower-cased field/variable names used, as Ollama's ``Vars`` (e.g. ``"messages"``)."""
        return frozenset(_identifiers(self._nodes))

    def references(self, name: str) -> bool:
        """Whether a field or variable path uses ``name`` (case-insensitive, like Ollama)."""
        return name.lower() in self.identifiers

    def with_response(self) -> GoTemplate:
        """A copy with ``{{ .Response }}`` appended: Ollama's touch-up for templates naming neither
        ``.Messages`` nor ``.Response``, so legacy per-turn rendering includes the replies."""
        t = GoTemplate.__new__(GoTemplate)
        t.source, t._cut = self.source, None
        t._nodes = self._nodes + (_Action(_Pipe(0, (), False, ((_Field(("Response",)),),))),)
        return t

    def execute(self, data: Mapping[str, Any] | None = None, *, cut_at_response: bool = False
                ) -> str:
        """Render with ``data`` as dot and ``$`` (mappings by key; other objects by attribute).

        ``cut_at_response`` renders only up to the first ``.Response`` field (inclusive), which
        is how Ollama ends the final turn of a legacy template where the model takes over.
        """
        nodes = self._nodes
        if cut_at_response:
            if self._cut is None:
                self._cut = _cut_at_response(self._nodes)
            nodes = self._cut
        ex = _Exec(data)
        try:
            ex.walk(nodes, data)
        except _Fail as e:
            raise _err(ex.line, f"executing: {e}") from None
        except RecursionError:
            raise _err(ex.line, "executing: template nests too deeply") from None
        return "".join(ex.out)


# ---- Ollama's prompt rules -------------------------------------------------------------------


@lru_cache(maxsize=64)
def _prepared(template: str) -> GoTemplate:
    t = GoTemplate(template)
    return t if t.references("messages") or t.references("response") else t.with_response()


def references_messages(template: str) -> bool:
    """Whether ``template`` uses ``.Messages`` (then Ollama renders the whole chat in one pass)."""
    return _prepared(template).references("messages")


def _plain(m: Any) -> dict[str, Any]:
    return dict(m.model_dump() if hasattr(m, "model_dump") else m)


def _prop(p: Mapping[str, Any]) -> GoStruct:
    p = _plain(p)
    t = p.get("type")
    nested = p.get("properties")
    props = JsonMap({k: _prop(v) for k, v in nested.items()}) if nested else None
    if props is not None:
        props.ordered = True
    return GoStruct({
        "AnyOf": [_prop(x) for x in p.get("anyOf") or []] or None,
        "Type": t[0] if isinstance(t, list) and len(t) == 1 else t,
        "Items": p.get("items"), "Description": p.get("description") or "",
        "Enum": p.get("enum"), "Properties": props, "Required": p.get("required"),
    }, {k: k[0].lower() + k[1:] + ",omitempty" for k in
        ("AnyOf", "Type", "Items", "Description", "Enum", "Properties", "Required")})


def _tool(tool: Any) -> GoStruct:
    """An API tool as Ollama's ``templateTool`` (fields ``.Function.Parameters.Properties`` ...)."""
    t = _plain(tool)
    fn = _plain(t.get("function") or {})
    ps = _plain(fn.get("parameters") or {})
    params = GoStruct({
        "Type": ps.get("type", ""), "Defs": ps.get("$defs"), "Items": ps.get("items"),
        "Required": ps.get("required"),
        "Properties": JsonMap({k: _prop(v) for k, v in (ps.get("properties") or {}).items()}),
    }, {"Type": "type", "Defs": "$defs,omitempty", "Items": "items,omitempty",
        "Required": "required,omitempty", "Properties": "properties"})
    func = GoStruct({"Name": fn.get("name", ""), "Description": fn.get("description") or "",
                     "Parameters": params},
                    {"Name": "name", "Description": "description", "Parameters": "parameters"})
    return GoStruct({"Type": t.get("type", "function"), "Items": t.get("items"), "Function": func},
                    {"Type": "type", "Items": "items,omitempty", "Function": "function"})


def _message(m: Mapping[str, Any]) -> GoStruct:
    """An API message as Ollama's ``templateMessage`` (``.Role``, ``.Content``, ``.ToolCalls``)."""
    calls = []
    for tc in m.get("tool_calls") or []:
        tc = _plain(tc)
        fn = _plain(tc.get("function") or {})
        args = fn.get("arguments") or {}
        if isinstance(args, str):  # OpenAI-style clients send a JSON string
            try:
                args = _json.loads(args)
            except ValueError:
                args = {}
        calls.append(GoStruct({"ID": tc.get("id") or "", "Function": GoStruct({
            "Index": fn.get("index") or 0, "Name": fn.get("name", ""),
            "Arguments": JsonMap(args if isinstance(args, Mapping) else {})})}))
    return GoStruct({"Role": m.get("role", ""), "Content": m.get("content") or "",
                     "Thinking": m.get("thinking") or "", "Images": m.get("images") or None,
                     "ToolCalls": calls or None, "ToolName": m.get("tool_name") or "",
                     "ToolCallID": m.get("tool_call_id") or ""})


def _collate(msgs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's ``collate``: join all system texts; merge runs of one role (except tool)."""
    system = [m.get("content") or "" for m in msgs if m.get("role") == "system"]
    out: list[dict[str, Any]] = []
    for m in msgs:
        if out and out[-1].get("role") == m.get("role") and m.get("role") != "tool":
            out[-1] = {**out[-1], "content": f"{out[-1].get('content') or ''}\n\n"
                                             f"{m.get('content') or ''}"}
        else:
            out.append(m)
    return "\n\n".join(system), out


def render_prompt(template: str, *, system: str | None = None,
                  messages: Sequence[Mapping[str, Any] | Any],
                  tools: Sequence[Mapping[str, Any] | Any] | None = None,
                  suffix: str | None = None, response: str = "",
                  think: bool | str | None = None) -> str:
    """Build the raw prompt exactly as Ollama's ``Template.Execute`` does.

    ``messages`` are API messages (dicts or pydantic models: role, content, tool_calls, ...).
    ``system`` is the Modelfile/request SYSTEM text, prepended as a system message unless the
    conversation already opens with one (Ollama's chat rule). With ``suffix`` (fill-in-the-middle)
    the template gets ``.Prompt`` (last user message) and ``.Suffix``. A template using
    ``.Messages`` renders once with the whole collated chat; older ``.System/.Prompt/.Response``
    templates render once per turn and the last turn stops where ``.Response`` would start.
    ``response`` is ``.Response`` for the single-pass paths (Ollama always passes "").
    """
    tmpl = _prepared(template)
    msgs = [_plain(m) for m in messages]
    if system and not (msgs and msgs[0].get("role") == "system"):
        msgs.insert(0, {"role": "system", "content": system})
    level = think if isinstance(think, str) else ("medium" if think else "")
    flags = {"Think": think is True or think in ("high", "medium", "low", "max"),
             "ThinkLevel": level, "IsThinkSet": think is not None}
    if suffix:
        prompt = next((m.get("content") or "" for m in reversed(msgs) if m.get("role") == "user"),
                      "")
        if prompt:
            return tmpl.execute({"Prompt": prompt, "Suffix": suffix, "Response": response,
                                 **flags})
    system_text, turns = _collate(msgs)
    if tmpl.references("messages"):
        return tmpl.execute({
            "System": system_text, "Messages": [_message(m) for m in turns],
            "Tools": None if tools is None else _JsonList(_tool(t) for t in tools),
            "Prompt": "", "Suffix": "", "Response": response, **flags})

    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for m in turns:  # legacy: one execution per system/user/assistant exchange
        role, content = m.get("role"), m.get("content") or ""
        if (role == "system" and (turn["Prompt"] or turn["Response"])) or (
                role == "user" and turn["Response"]):
            out.append(tmpl.execute({**turn, **flags}))
            turn = {"System": "", "Prompt": "", "Response": ""}
        if role in ("system", "user", "assistant"):
            turn[{"system": "System", "user": "Prompt", "assistant": "Response"}[role]] = content
    out.append(tmpl.execute({**turn, **flags}, cut_at_response=True))
    return "".join(out)
