"""Running a parsed template against data, with Go's scoping and Ollama's lenient lookups.

Parsing is the expensive part and happens once per template; execution walks the immutable
tree per request, keeping only per-run state (variables, output, the current line for errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .functions import FUNCS, LAZY, Fail
from .syntax import (
    Action,
    Arg,
    Branch,
    Chain,
    Dot,
    Field,
    Func,
    Lit,
    Node,
    Parser,
    Pipe,
    Var,
    err,
    identifiers,
)
from .syntax import cut_at_response as _cut_at_response  # execute() has a flag of that name
from .values import GoStruct, go_format, go_type, sorted_items, truth


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Exec:
    def __init__(self, root: Any) -> None:
        self.vars: list[list[Any]] = [["$", root]]
        self.out: list[str] = []
        self.line = 1

    def walk(self, nodes: Sequence[Node], dot: Any) -> None:
        for n in nodes:
            if isinstance(n, str):
                self.out.append(n)
            elif isinstance(n, Action):
                value = self.pipe(n.pipe, dot)
                if not n.pipe.decl:
                    self.out.append(go_format(value))
            elif isinstance(n, Branch):
                mark = len(self.vars)
                try:
                    self.branch(n, dot)
                finally:
                    del self.vars[mark:]
            else:
                raise _Break() if n.kind == "break" else _Continue()

    def branch(self, n: Branch, dot: Any) -> None:
        if n.kind != "range":
            value = self.pipe(n.pipe, dot)
            if truth(value):
                self.walk(n.body, value if n.kind == "with" else dot)
            elif n.orelse is not None:
                self.walk(n.orelse, dot)
            return
        value = self.pipe(Pipe(n.pipe.line, (), False, n.pipe.cmds), dot)
        if isinstance(value, Mapping):
            pairs: list[tuple[Any, Any]] = sorted_items(value)
        elif isinstance(value, (list, tuple)):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(n.pipe.decl) > 1:
                raise Fail("can't use int to iterate over more than one variable")
            pairs = [(i, i) for i in range(value)]
        elif value is None:
            pairs = []
        else:
            raise Fail(f"range can't iterate over {go_format(value)}")
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
        raise Fail(f'undefined variable "{name}"')

    def pipe(self, pipe: Pipe, dot: Any) -> Any:
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

    def command(self, cmd: tuple[Arg, ...], dot: Any, final: tuple[Any, ...]) -> Any:
        head = cmd[0]
        if not isinstance(head, Func):
            return self.arg(head, dot)
        if head.name in LAZY:  # and/or: return the deciding argument, evaluating no further
            args: list[Any] = [lambda a=a: self.arg(a, dot) for a in cmd[1:]]
            args += [lambda v=v: v for v in final]
            if not args:
                raise Fail(f"wrong number of args for {head.name}: want at least 1 got 0")
            v = None
            for get in args:
                v = get()
                if truth(v) == (head.name == "or"):
                    return v
            return v
        values = [self.arg(a, dot) for a in cmd[1:]] + list(final)
        try:
            return FUNCS[head.name](*values)
        except Fail:
            raise
        except TypeError as e:
            raise Fail(f"error calling {head.name}: {e}") from None

    def arg(self, a: Arg, dot: Any) -> Any:
        if isinstance(a, Lit):
            return a.value
        if isinstance(a, Dot):
            return dot
        if isinstance(a, Field):
            return self.fields(dot, a.idents)
        if isinstance(a, Var):
            for name, value in reversed(self.vars):
                if name == a.name:
                    return self.fields(value, a.idents)
            raise Fail(f'undefined variable "{a.name}"')
        if isinstance(a, Chain):
            return self.fields(self.pipe(a.node, dot), a.idents)
        if isinstance(a, Pipe):
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
                raise Fail(f"can't evaluate field {name} in type {go_type(value)}")
            else:
                value = getattr(value, name, None)
        return value


class GoTemplate:
    """A parsed Go ``text/template``: parse once, ``execute`` many times (it is immutable)."""

    def __init__(self, source: str) -> None:
        """Parse ``source``; raises :class:`TemplateError` (a ``ModelfileError``) on bad syntax."""
        self.source = source
        self._nodes, _ = Parser(source).parse_list(set())
        self._cut: tuple[Node, ...] | None = None

    @classmethod
    def parse(cls, source: str) -> GoTemplate:
        """Parse ``source`` (same as the constructor; reads better at call sites)."""
        return cls(source)

    @property
    def identifiers(self) -> frozenset[str]:
        """Lower-cased field/variable names used, as Ollama's ``Vars`` (e.g. ``"messages"``)."""
        return frozenset(identifiers(self._nodes))

    def references(self, name: str) -> bool:
        """Whether a field or variable path uses ``name`` (case-insensitive, like Ollama)."""
        return name.lower() in self.identifiers

    def with_response(self) -> GoTemplate:
        """A copy with ``{{ .Response }}`` appended: Ollama's touch-up for templates naming neither
        ``.Messages`` nor ``.Response``, so legacy per-turn rendering includes the replies."""
        t = GoTemplate.__new__(GoTemplate)
        t.source, t._cut = self.source, None
        t._nodes = self._nodes + (Action(Pipe(0, (), False, ((Field(("Response",)),),))),)
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
        except Fail as e:
            raise err(ex.line, f"executing: {e}") from None
        except RecursionError:
            raise err(ex.line, "executing: template nests too deeply") from None
        return "".join(ex.out)
