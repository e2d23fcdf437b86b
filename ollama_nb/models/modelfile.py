"""Modelfiles: parse them with Ollama's grammar, write them the way ``ollama show`` does.

The lexer is a port of the state machine in Ollama's ``parser/parser.go`` rather than a
regex, because its quirks are what existing Modelfiles rely on: values run to the end of the
line, quotes are only recognised around the *whole* value and have no escapes, a ``"`` or
triple-quoted value that is not closed on its line continues onto the next ones, ``#`` starts a comment
only at the start of a line, and non-printable characters are silently dropped. The checks
Ollama's CLI then runs (``Modelfile.CreateRequest``) happen in :func:`parse_modelfile` too, so
a bad PARAMETER fails here with Ollama's text instead of later at load time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..base.errors import InvalidRequest, ModelfileError
from .options import OPTION_SPECS, format_value, parse_parameter_value

log = logging.getLogger(__name__)

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
            "parameter", "message", "requires")
ERR_INVALID_COMMAND = ('command must be one of "from", "license", "template", "system", "adapter", '
                       '"draft", "renderer", "parser", "parameter", "message", or "requires"')
ERR_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
ERR_MISSING_FROM = "no FROM line"
ERR_REQUIRES = "requires must be a valid semver (e.g. 0.14.0)"
MESSAGE_ROLES = ("system", "user", "assistant")

# golang.org/x/mod/semver (with Ollama's optional leading "v"): "1", "1.2" and "1.2.3-rc.1+b".
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(rf"v?{_NUM}(?:\.{_NUM}(?:\.{_NUM}(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?"
                     rf"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?)?)?")


@dataclass
class Modelfile:
    """A parsed Modelfile. Single-valued instructions keep the last occurrence (as Ollama).

    ``from_`` is the first FROM; later FROM lines go to ``extra_from`` (``ollama show`` writes a
    vision projector that way). ``None`` means "instruction absent", which differs from an
    explicit empty ``SYSTEM ""``. ``commands`` is the raw (name, argument) list in file order.
    """

    from_: str = ""
    parameters: dict[str, object] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    requires: str | None = None
    extra_from: list[str] = field(default_factory=list)
    draft: str | None = None
    renderer: str | None = None
    parser: str | None = None
    commands: list[tuple[str, str]] = field(default_factory=list, compare=False, repr=False)

    def resolve_paths(self, base_dir: str | os.PathLike[str]) -> Modelfile:
        """A copy whose local FROM/ADAPTER/DRAFT values are absolute paths.

        Relative paths are relative to the Modelfile's directory, not the current one, since
        that is what the author meant; model names pass through untouched.
        """
        def fix(value: str) -> str:
            return expand_path(value, base_dir) if is_local_path(value, base_dir) else value

        return replace(
            self,
            from_=fix(self.from_),
            extra_from=[fix(v) for v in self.extra_from],
            adapters=[fix(v) for v in self.adapters],
            draft=None if self.draft is None else fix(self.draft),
        )


def is_local_path(value: str, base_dir: str | os.PathLike[str]) -> bool:
    """Does a FROM/ADAPTER value name a file rather than a model?

    Anything starting with ``.``, ``/``, ``\\`` or ``~`` (no model name can), an absolute
    Windows path, or a name that exists next to the Modelfile: Ollama tries the file first too.
    """
    if value.startswith((".", "/", "\\", "~")) or os.path.isabs(value):
        return True
    return bool(value) and os.path.exists(os.path.join(base_dir, value))


def expand_path(value: str, base_dir: str | os.PathLike[str]) -> str:
    """Absolute path for a local value: ``~``/``~user`` expanded, relative joined to base_dir."""
    if value.startswith("~"):
        expanded = os.path.expanduser(value)
        if expanded == value or expanded.startswith("~"):
            user = value[1:].split("/", 1)[0]
            raise ModelfileError(f"failed to find user '{user}'")
        return os.path.abspath(expanded)
    return os.path.abspath(os.path.join(os.fspath(base_dir), value))


# ---------------------------------------------------------------------------------------------
# Lexer: Ollama's state machine, one character at a time.

_NIL, _NAME, _VALUE, _PARAM, _ROLE, _COMMENT = range(6)


def _is_alpha(ch: str) -> bool:
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def _unquote(text: str) -> tuple[str, bool]:
    """Strip one pair of ``\"\"\"`` or ``"`` quotes; ``ok`` False while a quote is still open."""
    if text.startswith('"""'):
        return (text[3:-3], True) if len(text) >= 6 and text.endswith('"""') else ("", False)
    if text.startswith('"'):
        return (text[1:-1], True) if len(text) >= 2 and text.endswith('"') else ("", False)
    return text, True


def _err(line: int, msg: str) -> ModelfileError:
    """Ollama's ``ParserError`` format, used for every error tied to a line."""
    return ModelfileError(f"(line {line}): {msg}")


def _no_value(line: int, keyword: str, buf: list[str]) -> ModelfileError:
    """An instruction cut off by the end of its line; Ollama only says "unexpected EOF"."""
    what = " ".join([keyword, "".join(buf)]) if buf else keyword
    return _err(line, f"unexpected EOF: {what} has no value")


def _lex(text: str) -> list[tuple[str, str, int]]:
    """(command, argument, line) triples. Message arguments are ``"role: content"`` as in Go."""
    cmds: list[tuple[str, str, int]] = []
    state, buf, line, start = _NIL, [], 1, 1
    name = keyword = role = ""
    for i, ch in enumerate(text):
        newline = ch in "\r\n"
        space = ch in " \t"
        if state == _NIL:
            if ch == "#":
                state = _COMMENT
            elif not (space or newline):
                state, start, buf = _NAME, line, [ch] if ch.isprintable() else []
        elif state == _COMMENT:
            if newline:
                state = _NIL
        elif state == _NAME:
            keyword = "".join(buf)
            lower = keyword.lower()
            if _is_alpha(ch):
                buf.append(ch)
            elif space and lower in COMMANDS:
                name = {"from": "model"}.get(lower, lower)
                state = {"parameter": _PARAM, "message": _ROLE}.get(lower, _VALUE)
                buf = []
            elif newline and lower in COMMANDS:
                raise _no_value(line, keyword.upper(), [])
            else:
                raise _err(line, ERR_INVALID_COMMAND)
        elif state == _PARAM:
            if ch.isascii() and (ch.isalnum() or ch == "_"):
                buf.append(ch)
            elif space and buf:
                name, state, buf = "".join(buf), _VALUE, []
            elif space:
                pass  # extra blanks before the name (Ollama would read an empty name)
            elif newline:
                raise _no_value(line, "PARAMETER", buf)
            else:
                raise _err(line, f"invalid character {ch!r} in PARAMETER name {''.join(buf)!r}")
        elif state == _ROLE:
            if _is_alpha(ch):
                buf.append(ch)
            elif space and not buf:
                pass
            elif space and "".join(buf) in MESSAGE_ROLES:
                role, state, buf = "".join(buf), _VALUE, []
            elif newline and "".join(buf) in MESSAGE_ROLES:
                raise _no_value(line, "MESSAGE", buf)
            else:
                raise _err(line, ERR_INVALID_ROLE)
        else:  # _VALUE: only a newline can end it, and only once the quotes balance
            if newline:
                value, ok = _unquote("".join(buf).strip())
                if ok:
                    cmds.append((name, f"{role}: {value}" if role else value, start))
                    state, buf, role = _NIL, [], ""
                else:
                    buf.append(ch)
            elif space or ch.isprintable():
                buf.append(ch)
        if ch == "\n" or (ch == "\r" and text[i + 1 : i + 2] != "\n"):
            line += 1
    # end of input
    if state == _VALUE:
        stripped = "".join(buf).strip()
        value, ok = _unquote(stripped)
        if not ok:
            quote = '"""' if stripped.startswith('"""') else '"'
            raise _err(start, f"unexpected EOF: unterminated {quote} quote")
        cmds.append((name, f"{role}: {value}" if role else value, start))
    elif state == _NAME:
        keyword = "".join(buf)
        if keyword.lower() not in COMMANDS:
            raise _err(start, ERR_INVALID_COMMAND)
        raise _no_value(start, keyword.upper(), [])
    elif state == _PARAM:
        raise _no_value(start, "PARAMETER", buf)
    elif state == _ROLE:
        if "".join(buf) not in MESSAGE_ROLES:
            raise _err(start, ERR_INVALID_ROLE)
        raise _no_value(start, "MESSAGE", buf)
    return cmds


def _decode(data: bytes) -> str:
    """Ollama reads UTF-8 or BOM-marked UTF-16 (Windows editors save Modelfiles that way)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="replace")


def parse_modelfile(text: str | bytes) -> Modelfile:
    """Parse Modelfile text; every problem is a :class:`ModelfileError` (HTTP 400).

    Order of checks follows Ollama: the whole file is lexed first, then the FROM check, then
    the per-instruction checks (parameter names and values, REQUIRES).
    """
    if isinstance(text, bytes):
        text = _decode(text)
    text = text.removeprefix("\ufeff")
    cmds = _lex(text)
    if not any(name == "model" for name, _, _ in cmds):
        raise ModelfileError(ERR_MISSING_FROM)

    mf = Modelfile(commands=[(n, a) for n, a, _ in cmds])
    seen_from = False
    for name, arg, line in cmds:
        if name == "model":
            if seen_from:
                mf.extra_from.append(arg)
            else:
                mf.from_, seen_from = arg, True
        elif name == "adapter":
            mf.adapters.append(arg)
        elif name == "license":
            mf.license.append(arg)
        elif name in ("template", "system", "draft", "renderer", "parser"):
            setattr(mf, name, arg)
        elif name == "requires":
            if not _SEMVER.fullmatch(arg):
                raise _err(line, ERR_REQUIRES)
            mf.requires = arg.removeprefix("v")
        elif name == "message":
            role, _, content = arg.partition(": ")
            mf.messages.append({"role": role, "content": content})
        else:
            _add_parameter(mf.parameters, name, arg, line)
    return mf


def _add_parameter(params: dict[str, object], name: str, arg: str, line: int) -> None:
    spec = OPTION_SPECS.get(name)
    if spec is not None and spec.ignored:
        log.warning("parameter %s is deprecated", name)
        return
    try:
        value = parse_parameter_value(name, arg)
    except InvalidRequest as exc:
        raise _err(line, exc.message) from None
    if isinstance(value, list):
        existing = params.get(name)
        params[name] = [*existing, *value] if isinstance(existing, list) else value
    else:
        params[name] = value


# ---------------------------------------------------------------------------------------------
# Writing


def _quote(text: str) -> str:
    """Ollama's ``quote``: bare unless the value needs quotes to survive a re-parse.

    Ollama quotes only values with a newline or a leading/trailing space; this also quotes
    values with other edge whitespace, a CR, or a leading ``"`` (which Ollama would lose or
    mis-read on the way back). Triple quotes are used only when the value contains ``"``.
    """
    if "\n" in text or "\r" in text or text != text.strip() or text.startswith('"'):
        return f'"""{text}"""' if '"' in text else f'"{text}"'
    return text


def render_modelfile(
    name: str,
    model_path: str,
    *,
    template: str | None = None,
    system: str | None = None,
    parameters: Mapping[str, object] | None = None,
    messages: Sequence[Mapping[str, str]] = (),
    licenses: Sequence[str] | str = (),
    adapters: Sequence[str] = (),
    projectors: Sequence[str] = (),
    draft: str | None = None,
    renderer: str | None = None,
    parser: str | None = None,
) -> str:
    """The ``modelfile`` field of ``/api/show`` (``ollama show --modelfile``).

    Same header, instruction order and quoting as Ollama's ``GetModelInfo`` + ``Model.String``:
    FROM, ADAPTER, DRAFT, FROM (projectors), TEMPLATE, SYSTEM, RENDERER, PARSER, PARAMETER,
    LICENSE, MESSAGE. ``name`` is the short model name for the "replace FROM with" hint;
    ``model_path`` is the weights blob. ``template=None`` omits TEMPLATE (Ollama writes it
    whenever the model has one, even empty).
    """
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {name}",
        "",
        f"FROM {model_path}",
    ]
    lines += [f"ADAPTER {_quote(a)}" for a in adapters]
    if draft:
        lines.append(f"DRAFT {_quote(draft)}")
    lines += [f"FROM {p}" for p in projectors]
    for keyword, value in (("TEMPLATE", template), ("SYSTEM", system or None),
                           ("RENDERER", renderer or None), ("PARSER", parser or None)):
        if value is not None:
            lines.append(f"{keyword} {_quote(value)}")
    for key, value in (parameters or {}).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            lines.append(f"PARAMETER {key} {_quote(format_value(item))}")
    lines += [f"LICENSE {_quote(text)}" for text in ([licenses] if isinstance(licenses, str) else licenses)]
    lines += [f"MESSAGE {m['role']} {_quote(m['content'])}" for m in messages]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# /api/create


def file_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file, read in chunks (GGUFs are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def collect_files(path: str | os.PathLike[str]) -> dict[str, Path]:
    """Upload name -> local file for a FROM/ADAPTER path: the file, or a directory's GGUFs."""
    p = Path(path)
    if p.is_file():
        return {p.name: p}
    if p.is_dir():
        found = {f.relative_to(p).as_posix(): f for f in sorted(p.glob("*.gguf")) if f.is_file()}
        if found:
            return found
        raise ModelfileError(f"no GGUF files found in {p}")
    raise ModelfileError(f"no such file or directory: {p}")


def to_create_request(
    mf: Modelfile,
    base_dir: str | os.PathLike[str] = ".",
    *,
    digest: Callable[[Path], str] = file_digest,
) -> dict[str, object]:
    """The ``/api/create`` body for ``mf`` (Ollama's ``Modelfile.CreateRequest``), minus ``model``.

    Local FROM/ADAPTER/DRAFT paths become ``files``/``adapters``/``draft_files`` maps of upload
    name -> digest (use :func:`collect_files` for the local path of each name when uploading);
    a FROM that is not a local path is the base model name (the last one wins, as in Ollama).
    Empty template/system are left out, as Go's ``omitempty`` does.
    """
    req: dict[str, object] = {}

    def digests(values: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for value in values:
            for upload_name, local in collect_files(expand_path(value, base_dir)).items():
                out[upload_name] = digest(local)
        return out

    froms = [mf.from_, *mf.extra_from]
    local = [v for v in froms if is_local_path(v, base_dir)]
    names = [v for v in froms if v and not is_local_path(v, base_dir)]
    if names:
        req["from"] = names[-1]
    if local:
        req["files"] = digests(local)
    if mf.adapters:
        req["adapters"] = digests(mf.adapters)
    if mf.draft:
        req["draft_files"] = digests([mf.draft])
    for key in ("template", "system", "renderer", "parser", "requires"):
        if getattr(mf, key):
            req[key] = getattr(mf, key)
    if mf.license:
        req["license"] = list(mf.license)
    if mf.parameters:
        req["parameters"] = {k: list(v) if isinstance(v, list) else v for k, v in mf.parameters.items()}
    if mf.messages:
        req["messages"] = [dict(m) for m in mf.messages]
    return req
