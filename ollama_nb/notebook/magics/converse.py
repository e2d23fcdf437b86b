"""One ``%%chat`` / ``%%generate`` / ``%ollama run`` turn, from cell text to shown reply.

The order matters for keeping a session consistent: the request is made first (an unknown model
or a bad option fails here and nothing is recorded or shown), then the reply is streamed into
the cell, then the turn is recorded (interrupted or not), then the format is applied and the
result stored. A kernel interrupt ends the stream at once (the stream is closed, which cancels
generation before the next token), keeps the partial reply on screen and in the session, and
ends the cell with a one-line :class:`Interrupted` instead of a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..connection import read_reply
from ..display import ChatResult, DisplayStream, TextStream, extract_code, render, summary_bundle
from ..images import images_base64, thumbnails_html
from ..sessions import DEFAULT_SESSION, Session
from .interpolate import interpolate as fill

if TYPE_CHECKING:
    from . import OllamaMagics


class Interrupted(KeyboardInterrupt):
    """A generation (or pull) stopped by a kernel interrupt, already cleaned up.

    Still a KeyboardInterrupt, so "Run all" stops at this cell as for any interrupt, but IPython
    shows only this one line (``_render_traceback_``) instead of a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def _render_traceback_(self) -> list[str]:
        return [f"Interrupted: {self.message}"]


class EmptyPrompt(ValueError):
    pass


@dataclass
class Turn:
    """Everything one turn needs, resolved from the arguments and the magics' settings."""

    kind: str  # "chat" or "generate"
    prompt: str
    model: str
    format: str
    options: dict[str, Any]
    stream: bool = True
    output: str | None = None
    keep_alive: Any = None
    session: Session | None = None
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    images: list[str] = field(default_factory=list)  # base64, sent with the prompt
    extra: dict[str, Any] = field(default_factory=dict)


def prompt_text(magics: OllamaMagics, cell: str | None, *, interpolate: bool, what: str) -> str:
    text = (cell or "").strip()
    if not text:
        raise EmptyPrompt(f"the prompt is empty: write it in the cell body below {what}")
    if interpolate and magics.interpolate:

        text = fill(text, magics.shell.user_ns)
    return text


def merged_options(magics: OllamaMagics, args: Any) -> dict[str, Any]:
    options = {**magics.options, **(getattr(args, "options", None) or {})}
    temperature = getattr(args, "temperature", None)
    if temperature is not None:
        options["temperature"] = temperature
    return options


def _sink(magics: OllamaMagics) -> DisplayStream | TextStream:
    mode = magics.stream_to
    if mode == "auto":
        mode = "display" if getattr(magics.shell, "kernel", None) is not None else "text"
    return DisplayStream(magics.shell) if mode == "display" else TextStream()


def _request(magics: OllamaMagics, turn: Turn) -> Any:
    backend = magics.backend
    common: dict[str, Any] = {"model": turn.model, "options": turn.options or None, "stream": True}
    if turn.keep_alive is not None:
        common["keep_alive"] = turn.keep_alive
    if turn.format == "json":
        common["format"] = "json"
    if turn.kind == "generate":
        if turn.images:
            common["images"] = turn.images
        return backend.generate(prompt=turn.prompt, system=turn.system, raw=turn.raw, suffix=turn.suffix,
                                **common)
    if turn.session is not None:
        messages = turn.session.messages(turn.prompt, magics.max_history, images=turn.images)
    else:
        messages = ([{"role": "system", "content": turn.system}] if turn.system else []) + [
            {"role": "user", "content": turn.prompt, **({"images": turn.images} if turn.images else {})}
        ]
    return backend.chat(messages=messages, **common)


def run_turn(magics: OllamaMagics, turn: Turn) -> Any:
    """Ask, stream, record, format; returns the cell's value (the parsed object for json)."""
    started = time.perf_counter_ns()
    chunks = _request(magics, turn)  # fails before anything is shown or recorded
    sink = _sink(magics)
    if turn.images:
        show_thumbnails(magics, turn.images, terminal=isinstance(sink, TextStream))
    try:
        sink.start()
        result = read_reply(
            chunks,
            model=turn.model,
            kind=turn.kind,
            started_ns=started,
            on_text=sink.update if turn.stream else None,
            interval=magics.stream_interval,
        )
    except BaseException:
        # e.g. the model failed to load: leave no "…" behind and record nothing
        sink.abandon()
        raise
    result.prompt = turn.prompt
    result.format = turn.format
    if turn.session is not None:
        result.session = turn.session.name
        turn.session.record(turn.prompt, result.text, turn.model, interrupted=result.interrupted,
                            eval_count=result.timings.eval_count if result.timings else None,
                            images=turn.images)
    problem = None if result.interrupted else _apply_format(magics, result)
    if result.format == "json" and result.value is not None:
        sink.finish(summary_bundle(result, "JSON reply, returned as the cell's value"), result.metadata())
    else:
        sink.finish(render(result), result.metadata())
    if turn.output:
        magics.shell.user_ns[turn.output] = result
    if problem:
        print(f"Error: {problem}", file=sys.stderr)
    if result.error:  # the backend broke off: the partial reply is shown, kept and marked
        where = f" in session '{result.session}'" if result.session else ""
        print(f"Error: {result.error} (the partial reply, {len(result.text)} characters, is kept{where})",
              file=sys.stderr)
        return None
    if result.interrupted and not result.text:
        raise Interrupted("generation stopped before the first token; nothing was added to the session")
    if result.interrupted:
        where = f" in session '{result.session}'" if result.session else ""
        raise Interrupted(f"generation stopped; the partial reply ({len(result.text)} characters) is kept{where}")
    return result.value if result.format == "json" else None


def show_thumbnails(magics: OllamaMagics, images: list[str], *, terminal: bool) -> None:
    """The images a turn sends, small, above its reply (a count in a terminal)."""
    if terminal:
        print(f"[{len(images)} image(s)]")
        return
    from IPython.display import display

    display({"text/html": thumbnails_html(images), "text/plain": f"[{len(images)} image(s)]"}, raw=True)


def resolve_images(magics: OllamaMagics, names: list[str] | None) -> list[str]:
    """``--image X``: a variable of the notebook holding an image (or images), else a path."""
    out: list[str] = []
    for name in names or []:
        value = magics.shell.user_ns[name] if name.isidentifier() and name in magics.shell.user_ns else name
        out.extend(images_base64(value))
    return out


def _apply_format(magics: OllamaMagics, result: ChatResult) -> str | None:
    """Parse json / extract code; returns a problem line, or None."""
    if result.format == "json":
        try:
            result.value = json.loads(result.text)
        except json.JSONDecodeError as exc:
            return f"the reply is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    elif result.format == "code":
        result.value = extract_code(result.text)
        magics.shell.set_next_input(result.value, replace=False)
    return None


def chat_turn(magics: OllamaMagics, args: Any, cell: str | None) -> Any:
    prompt = prompt_text(magics, cell, interpolate=not args.no_interpolate, what="%%chat")
    name = args.session or DEFAULT_SESSION
    if args.new:
        magics.sessions.reset(name)
    session = magics.sessions.get(name)
    if args.system is not None:
        session.system = args.system
    turn = Turn(
        kind="chat",
        prompt=prompt,
        model=magics.qualified(args.model or session.model or magics.default_model, args.backend),
        format=args.format or magics.default_format,
        options=merged_options(magics, args),
        stream=not args.no_stream,
        output=args.output,
        keep_alive=args.keep_alive or magics.keep_alive,
        session=session,
        images=resolve_images(magics, args.image),
    )
    return run_turn(magics, turn)


def generate_turn(magics: OllamaMagics, args: Any, cell: str | None) -> Any:
    prompt = prompt_text(magics, cell, interpolate=not args.no_interpolate, what="%%generate")
    turn = Turn(
        kind="generate",
        prompt=prompt,
        model=magics.qualified(args.model or magics.default_model, args.backend),
        format=args.format or "text",
        options=merged_options(magics, args),
        stream=not args.no_stream,
        output=args.output,
        keep_alive=args.keep_alive or magics.keep_alive,
        system=args.system,
        raw=args.raw,
        suffix=args.suffix,
        images=resolve_images(magics, args.image),
    )
    return run_turn(magics, turn)


def run_once(magics: OllamaMagics, args: Any, cell: str | None) -> Any:
    """``%ollama run MODEL PROMPT``: one question, no session."""
    text = " ".join(args.prompt) if args.prompt else (cell or "")
    prompt = prompt_text(magics, text, interpolate=False, what="%%ollama run MODEL")
    turn = Turn(
        kind="chat",
        prompt=prompt,
        model=magics.qualified(args.model, args.backend),
        format=args.format or magics.default_format,
        options={**magics.options, **args.options},
        keep_alive=magics.keep_alive,
    )
    return run_turn(magics, turn)


__all__ = ["EmptyPrompt", "Interrupted", "Turn", "chat_turn", "generate_turn", "run_once", "run_turn"]
