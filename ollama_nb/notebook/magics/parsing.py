"""Arguments of ``%ollama``, ``%%chat`` and ``%%generate``: shlex tokens -> argparse -> typed
namespaces. A mistake never exits the kernel or prints a traceback: the parsers raise
:class:`ArgError` carrying the usage, which the magics print as two short lines."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any, NoReturn

from ...backends.settings import KINDS
from ..display import FORMATS


class ArgError(Exception):
    """A bad command line: ``message`` says what, ``usage`` how it should look."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage.strip()


class HelpShown(Exception):
    """``-h`` was given: the help is already printed, nothing else to do."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of calling ``sys.exit``."""

    def error(self, message: str) -> NoReturn:
        raise ArgError(message, self.format_usage())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise ArgError((message or "").strip() or "invalid arguments", self.format_usage())
        raise HelpShown()


def split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise ArgError(f"cannot split the arguments: {exc}") from None


def parse(parser: Parser, line: str) -> argparse.Namespace:
    try:
        return parser.parse_args(split(line))
    except argparse.ArgumentError as exc:
        raise ArgError(str(exc), parser.format_usage()) from None


# ---- value types ------------------------------------------------------------------------------


def json_object(text: str) -> dict[str, Any]:
    """``--options '{"num_predict": 8}'``: must be a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON ({exc.msg} at column {exc.colno}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"temperature\": 0}}', got {text}")
    return value


def identifier(text: str) -> str:
    """``-o VAR``: a Python name to store the result under."""
    if not text.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid Python variable name")
    return text


# ---- %%chat and %%generate ---------------------------------------------------------------------


def _common(p: Parser, default_format_help: str) -> None:
    p.add_argument("-m", "--model", help="model to use (default: the session's last model, then "
                   "OllamaMagics.default_model)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--temperature", type=float, help="sampling temperature")
    p.add_argument("--options", type=json_object, default={}, metavar="JSON",
                   help='model options as a JSON object, e.g. \'{"num_predict": 64, "seed": 1}\'')
    p.add_argument("--format", choices=FORMATS, help=default_format_help)
    p.add_argument("-o", "--output", type=identifier, metavar="VAR",
                   help="store the whole result (text, model, timings) in this variable")
    p.add_argument("--no-stream", action="store_true", help="show the reply only when it is complete")
    p.add_argument("--no-interpolate", action="store_true",
                   help="send {braces} literally instead of filling in {var}, {In[3]}, {Out[3]}")
    p.add_argument("--keep-alive", dest="keep_alive", metavar="DURATION",
                   help='how long the model stays loaded afterwards (e.g. "5m", "0")')
    p.add_argument("--backend", metavar="NAME",
                   help="backend the model runs on (default: the NAME/ of NAME/model, else this kernel)")
    p.add_argument("--image", action="append", metavar="X",
                   help="an image for a vision model: a variable (bytes, a PIL image, a path, or a list "
                        "of them) or a file path; repeat for more")


def chat_parser() -> Parser:
    p = Parser(prog="%%chat", add_help=True,
               description="Chat with a model; the cell body is the prompt. Conversations continue "
               "across cells, one per --session.")
    _common(p, "how to show the reply: markdown (default), text, json (returns the parsed object), "
               "code (puts the code into a new cell below)")
    p.add_argument("--session", default=None, help='conversation to continue (default: "default")')
    p.add_argument("--new", action="store_true", help="start the session afresh")
    return p


def generate_parser() -> Parser:
    p = Parser(prog="%%generate", add_help=True,
               description="Plain completion of the cell body (no conversation), e.g. with a base model.")
    _common(p, "how to show the completion: text (default), markdown, json, code")
    p.add_argument("--raw", action="store_true", help="send the prompt as is, without the model's template")
    p.add_argument("--suffix", help="text after the insertion point (fill-in-the-middle models)")
    return p


# ---- %ollama ------------------------------------------------------------------------------------


def ollama_parser() -> Parser:
    p = Parser(prog="%ollama", add_help=True,
               description="Manage and run models, like the ollama command line.")
    sub = p.add_subparsers(dest="command", metavar="command", parser_class=Parser)

    s = sub.add_parser("pull", help="Pull a model from a registry")
    s.add_argument("model")
    s.add_argument("--backend", metavar="NAME", help="pull it on this backend")
    s.add_argument("--insecure", action="store_true", help="Use an insecure registry")

    s = sub.add_parser("push", help="Push a model to the registry its name names (host/namespace/model)")
    s.add_argument("model")
    s.add_argument("--insecure", action="store_true", help="Use an insecure registry (plain http)")

    s = sub.add_parser("list", aliases=["ls"], help="List models (a DataFrame)")
    s.add_argument("--backend", metavar="NAME", help="only this backend's models")
    s = sub.add_parser("ps", help="List running models (a DataFrame)")
    s.add_argument("--backend", metavar="NAME", help="only this backend's models")
    sub.add_parser("info", help="Show the runtime: llama.cpp build, devices, CPU probe, threads")

    s = sub.add_parser("show", help="Show information for a model")
    s.add_argument("model")
    s.add_argument("--backend", metavar="NAME", help="the model on this backend")
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        s.add_argument(f"--{flag}", action="store_true", help=f"Show the {flag} of a model")
    s.add_argument("-v", "--verbose", action="store_true", help="Show detailed model information")

    s = sub.add_parser("rm", help="Remove a model")
    s.add_argument("models", nargs="+")

    s = sub.add_parser("cp", help="Copy a model")
    s.add_argument("source")
    s.add_argument("destination")

    s = sub.add_parser("create", help="Create a model from a Modelfile (the cell body with %%%%ollama)")
    s.add_argument("model")
    s.add_argument("-f", "--file", help='Name of the Modelfile (default: the cell body, else "Modelfile")')
    s.add_argument("-q", "--quantize", help="Quantize model to this level (e.g. q4_K_M)")

    s = sub.add_parser("run", help="Run a model once on a prompt (no conversation kept)")
    s.add_argument("model")
    s.add_argument("--backend", metavar="NAME", help="the model on this backend")
    s.add_argument("prompt", nargs="*", help="the prompt (or the cell body with %%%%ollama run)")
    s.add_argument("--options", type=json_object, default={}, metavar="JSON", help="model options")
    s.add_argument("--format", choices=FORMATS, help="markdown (default), text, json, code")

    s = sub.add_parser("stop", help="Unload a running model")
    s.add_argument("model")

    s = sub.add_parser("serve", help="Serve the Ollama API from this kernel")
    s.add_argument("--host", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default: OLLAMA_HOST, else 11434 if free)")
    s.add_argument("--stop", action="store_true", help="stop the server started here")

    s = sub.add_parser("connect", help="Add a named backend (NAME URL), or use one server for everything (URL)")
    s.add_argument("target", nargs="*", metavar="[NAME] URL",
                   help="NAME URL: add a backend whose models are NAME/model; URL alone: use that Ollama "
                   "server instead of this kernel's models; nothing: show what is used")
    s.add_argument("--kind", choices=KINDS, default="ollama",
                   help="ollama (default) or openai (vLLM, SGLang, llama-server, LM Studio, ...)")
    s.add_argument("--api-key-env", dest="api_key_env", metavar="VAR",
                   help="environment variable holding the backend's API key (the key is never stored)")
    s.add_argument("--local", action="store_true", help="go back to this kernel's models")

    sub.add_parser("backends", help="List the backends, their health and model counts (a DataFrame)")

    s = sub.add_parser("disconnect", help="Remove a named backend")
    s.add_argument("name")

    s = sub.add_parser("history", help="Show a %%%%chat conversation")
    s.add_argument("session", nargs="?", default=None)
    s.add_argument("--all", action="store_true", help="every session")

    s = sub.add_parser("reset", help="Forget a %%%%chat conversation")
    s.add_argument("session", nargs="?", default=None)
    s.add_argument("--all", action="store_true", help="every session")

    sub.add_parser("help", help="Show this help")
    return p


__all__ = [
    "ArgError",
    "HelpShown",
    "Parser",
    "chat_parser",
    "generate_parser",
    "identifier",
    "json_object",
    "ollama_parser",
    "parse",
    "split",
]
