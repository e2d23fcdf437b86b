"""Template text to a tree, checked when the Modelfile is read rather than when a chat runs.

A bad ``TEMPLATE`` should fail at create/load time with Go's ``template: :LINE: why`` message,
and Ollama's own prompt rules inspect the parsed tree (which fields it names, where
``.Response`` starts), so the parse result is a tree of small immutable nodes, not a closure.
"""

from __future__ import annotations

import ast
import json as _json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

from ollama_nb.base.errors import ModelfileError

from .functions import FUNCS, LAZY
from .values import go_format


class TemplateError(ModelfileError):
    """A template that does not parse or execute; the text follows Go's ``template: :LINE: why``."""


# ---- syntax tree -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    idents: tuple[str, ...]


@dataclass(frozen=True)
class Var:
    name: str
    idents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Func:
    name: str


@dataclass(frozen=True)
class Dot:
    pass


@dataclass(frozen=True)
class Chain:
    node: Pipe
    idents: tuple[str, ...]


@dataclass(frozen=True)
class Pipe:
    line: int
    decl: tuple[str, ...]
    is_assign: bool
    cmds: tuple[tuple[Arg, ...], ...]


Arg = Union[Field, Var, Lit, Func, Dot, Chain, Pipe]


@dataclass(frozen=True)
class Action:
    pipe: Pipe


@dataclass(frozen=True)
class Branch:
    kind: str  # "if" | "with" | "range"
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...] | None


@dataclass(frozen=True)
class Jump:
    kind: str  # "break" | "continue"


Node = Union[str, Action, Branch, Jump]


# ---- lexer and parser ------------------------------------------------------------------------

_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template",
             "block"}
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


def err(line: int, msg: str) -> TemplateError:
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
        raise err(line, f"bad {what} syntax: {text}") from None


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
                raise err(line, "unclosed comment")
            pos = end + 2
            trim_next = src[pos:pos + 1] in tuple(_SPACE) and src.startswith("-}}", pos + 1)
            pos += 2 if trim_next else 0
            if not src.startswith("}}", pos):
                raise err(line, "comment ends before closing delimiter")
            pos += 2
            continue
        toks: list[_Tok] = []
        spaced = False
        while True:
            if pos >= len(src):
                raise err(line, "unclosed action")
            if src.startswith("}}", pos):
                pos, trim_next = pos + 2, False
                break
            m = _TOKEN.match(src, pos)
            if not m:
                raise err(line, "unterminated quoted string" if src[pos] in "\"'`" else
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


class Parser:
    def __init__(self, src: str) -> None:
        self.items = _lex(src)
        self.i = 0
        self.scopes: list[set[str]] = [{"$"}]
        self.loops = 0
        self.line = 1
        self.toks: list[_Tok] = []
        self.t = 0

    def error(self, msg: str) -> TemplateError:
        return err(self.line, msg)

    def peek(self, k: int = 0) -> _Tok | None:
        return self.toks[self.t + k] if self.t + k < len(self.toks) else None

    def expect_end(self, what: str) -> None:
        if (tok := self.peek()) is not None:
            raise self.error(f"unexpected {tok.value!r} in {what}")

    def parse_list(self, ends: set[str]) -> tuple[tuple[Node, ...], str | None]:
        nodes: list[Node] = []
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
                    nodes.append(Jump(kw))
                else:
                    raise self.error(f"{{{{{kw}}}}} is not supported")
                continue
            pipe = self.parse_pipe(decl_ok=1)
            self.expect_end("command")
            nodes.append(Action(pipe))
        if ends:
            raise self.error("unexpected EOF")
        return tuple(nodes), None

    def parse_branch(self, kind: str) -> Branch:
        self.scopes.append(set())
        pipe = self.parse_pipe(decl_ok=2 if kind == "range" else 1)
        self.expect_end(kind)
        self.loops += kind == "range"
        body, end = self.parse_list({"end", "else"})
        self.loops -= kind == "range"
        orelse: tuple[Node, ...] | None = None
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
        return Branch(kind, pipe, body, orelse)

    def parse_pipe(self, decl_ok: int = 0, paren: bool = False) -> Pipe:
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
        cmds: list[tuple[Arg, ...]] = []
        while True:
            args: list[Arg] = []
            while (tok := self.peek()) is not None and not (
                    tok.kind == "op" and tok.value in ("|", ")")):
                args.append(self.parse_operand())
            if not args:
                raise self.error("missing value for command")
            if not isinstance(args[0], Func) and (len(args) > 1 or cmds):
                raise self.error(f"can't give argument to non-function {_show(args[0])}")
            if isinstance(args[0], Lit) and args[0].value is None and len(args) == 1:
                raise self.error("nil is not a command")
            cmds.append(tuple(args))
            tok = self.peek()
            if tok is None or tok.value != "|":
                break
            self.t += 1
        if paren != (tok is not None and tok.kind == "op" and tok.value == ")"):
            raise self.error("unclosed left paren" if paren else "unexpected right paren")
        self.t += paren
        return Pipe(self.line, tuple(decl), is_assign, tuple(cmds))

    def parse_operand(self) -> Arg:
        tok = self.peek()
        assert tok is not None
        self.t += 1
        node: Arg
        if tok.kind == "ident":
            if tok.value not in FUNCS and tok.value not in LAZY:
                raise self.error(f'function "{tok.value}" not defined')
            node = Func(tok.value)
        elif tok.kind == "field":
            node = Field((tok.value,))
        elif tok.kind == "var":
            if not any(tok.value in s for s in self.scopes):
                raise self.error(f'undefined variable "{tok.value}"')
            node = Var(tok.value)
        elif tok.kind == "dot":
            node = Dot()
        elif tok.kind == "lit":
            node = Lit(tok.value)
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
        if isinstance(node, Field):
            return Field(node.idents + tuple(fields))
        if isinstance(node, Var):
            return Var(node.name, node.idents + tuple(fields))
        if not isinstance(node, Pipe):
            raise self.error(f"unexpected . after term {tok.value!r}")
        return Chain(node, tuple(fields))


def _show(a: Arg) -> str:
    """Source-like text of an operand, for error messages."""
    if isinstance(a, Field):
        return "." + ".".join(a.idents)
    if isinstance(a, Var):
        return ".".join((a.name, *a.idents))
    if isinstance(a, Lit):
        return _json.dumps(a.value) if isinstance(a.value, str) else go_format(a.value, False)
    return "." if isinstance(a, Dot) else "(...)"


# ---- walks over a parsed tree ---------------------------------------------------------------


def identifiers(nodes: Sequence[Any]) -> Iterator[str]:
    """Field and variable names, as Ollama's ``Template.Vars`` collects them (lower-cased)."""
    for n in nodes:
        if isinstance(n, Action):
            yield from identifiers([n.pipe])
        elif isinstance(n, Branch):
            yield from identifiers([n.pipe, *n.body, *(n.orelse or ())])
        elif isinstance(n, Pipe):
            yield from identifiers([a for cmd in n.cmds for a in cmd])
        elif isinstance(n, Field):
            yield from (i.lower() for i in n.idents)
        elif isinstance(n, Var):
            yield from (i.lower() for i in (n.name, *n.idents))


def cut_at_response(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """Ollama's ``deleteNode``: keep the tree up to and including the first ``.Response`` field.

    Everything after it is dropped, so a legacy template's final turn ends where the model's reply
    starts. (Where Go would panic on an ``{{else}}`` after the cut, the else branch is dropped.)
    """
    cut = False

    def gone(n: Any) -> bool:
        nonlocal cut
        if isinstance(n, Field) and "Response" in n.idents:
            cut = True
            return False
        return cut

    def walk(n: Any) -> Any:
        if gone(n):
            return None
        if isinstance(n, tuple):
            return tuple(c for c in map(walk, n) if c is not None)
        if isinstance(n, Branch):
            body = walk(n.body)
            orelse = None if n.orelse is None else walk(n.orelse)
            return Branch(n.kind, n.pipe, body, orelse)
        if isinstance(n, Action):
            pipe = walk(n.pipe)
            return None if pipe is None else Action(pipe)
        if isinstance(n, Pipe):
            cmds = []
            for cmd in n.cmds:
                args = tuple(a for a in map(walk, cmd) if a is not None)
                if not args:
                    return None
                cmds.append(args)
            return Pipe(n.line, n.decl, n.is_assign, tuple(cmds))
        return n

    return walk(nodes) or ()
