"""``ollama-nb``: the ``ollama`` command line, on the in-process manager (no server needed).

Output and exit codes follow the ``ollama`` CLI: tables for ``list``/``ps``, streaming text for
``run``, progress bars for ``pull``/``create``; any error is one ``Error: ...`` line on stderr and
exit code 1 (set ``OLLAMA_NB_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ..base import config
from ..base.errors import InvalidRequest, OllamaNbError
from ..base.humanize import human_bytes, human_since
from ..base.version import __version__
from ..models.modelfile import parse_modelfile
from .common import manager as _manager
from .common import show_info, show_progress
from .run import add_run_parser, normalize_argv


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "    ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
    )


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))




# ---- commands --------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> None:
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for m in _manager().list().models:
        rows.append([m.name, m.digest[:12], human_bytes(m.size), human_since(_parse_time(m.modified_at))])
    print(_table(rows))


def cmd_ps(args: argparse.Namespace) -> None:
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in _manager().ps().models:
        if m.size_vram == 0:
            proc = "100% CPU"
        elif m.size_vram >= m.size:
            proc = "100% GPU"
        else:
            gpu = round(100 * m.size_vram / m.size)
            proc = f"{100 - gpu}%/{gpu}% CPU/GPU"
        until = _parse_time(m.expires_at)
        left = "Forever" if until.year > 2200 else human_since(until)
        rows.append([m.name, m.digest[:12], human_bytes(m.size), proc, str(m.context_length), left])
    print(_table(rows))


def cmd_pull(args: argparse.Namespace) -> None:
    show_progress(_manager().pull(args.model, insecure=args.insecure))


def cmd_push(args: argparse.Namespace) -> None:
    show_progress(_manager().push(args.model, insecure=args.insecure))


def cmd_show(args: argparse.Namespace) -> None:
    info = _manager().show(args.model, verbose=args.verbose)
    if args.modelfile:
        print(info.modelfile)
        return
    if args.parameters:
        print(info.parameters or "")
        return
    if args.template:
        print(info.template or "")
        return
    if args.system:
        print(info.system or "")
        return
    if args.license:
        print(info.license or "")
        return
    show_info(info)


def cmd_rm(args: argparse.Namespace) -> None:
    for name in args.models:
        _manager().delete(name)
        print(f"deleted '{name}'")


def cmd_cp(args: argparse.Namespace) -> None:
    _manager().copy(args.source, args.destination)
    print(f"copied '{args.source}' to '{args.destination}'")


def cmd_stop(args: argparse.Namespace) -> None:

    if not _manager().unload(args.model):
        raise OllamaNbError(f"couldn't find model \"{args.model}\" to stop")


def cmd_create(args: argparse.Namespace) -> None:
    path = args.file or "Modelfile"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:

        raise InvalidRequest(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None

    text = raw.decode("utf-8-sig", errors="replace")
    parse_modelfile(text)
    base = os.path.dirname(os.path.abspath(path))
    show_progress(_manager().create(args.model, text, base_dir=base, quantize=args.quantize), out=sys.stdout)


def cmd_info(args: argparse.Namespace) -> None:
    """What the runtime does here: build, devices, CPU probe, threads (``--json``: /api/info's body)."""
    info = _manager().info()
    if args.json:
        print(info.model_dump_json(indent=2))
        return
    from ..manager.info import format_info

    sys.stdout.write(format_info(info))


def _served() -> Any:
    """The manager, or with ``OLLAMA_NB_ROUTE_BACKENDS=1`` a router over it and the backends of
    ``OLLAMA_NB_BACKENDS`` (so this server's clients reach ``NAME/model`` too)."""
    from ..backends.settings import route_from_env, specs_from_env

    manager = _manager()
    if not route_from_env():
        return manager
    from ..backends.router import Router

    router = Router(manager)
    for spec in specs_from_env():
        router.register(spec)
    return router


def cmd_serve(args: argparse.Namespace) -> None:
    """``ollama serve``: Ollama's API in the foreground on OLLAMA_HOST (127.0.0.1:11434) until
    SIGINT/SIGTERM; the store, keep-alive, queue and CORS settings come from the same OLLAMA_*
    variables as Ollama's."""

    from ..server.lifecycle import serve

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("time=%(asctime)s level=%(levelname)s msg=%(message)s"))
    logging.getLogger("ollama_nb").addHandler(handler)
    setting = config.host()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = serve(_served(), setting.host, setting.port)
        print(f"Listening on {server.url} (ollama-nb {__version__}, Ollama API {config.api_version()})",
              file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        server.stop()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollama-nb", description="Large language model runner, in your notebook kernel.")
    parser.add_argument("-v", "--version", action="store_true", help="Show version information")
    sub = parser.add_subparsers(dest="command", metavar="command")

    p = sub.add_parser("pull", help="Pull a model from a registry")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="Push a model to a registry")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("list", aliases=["ls"], help="List models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("ps", help="List running models")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("show", help="Show information for a model")
    p.add_argument("model")
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        p.add_argument(f"--{flag}", action="store_true", help=f"Show {flag} of a model")
    p.add_argument("-v", "--verbose", action="store_true", help="Show detailed model information")
    p.set_defaults(func=cmd_show)

    add_run_parser(sub)

    p = sub.add_parser("create", help="Create a model from a Modelfile")
    p.add_argument("model")
    p.add_argument("-f", "--file", help='Name of the Modelfile (default "Modelfile")')
    p.add_argument("-q", "--quantize", help="Quantize model to this level (e.g. q4_K_M)")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("cp", help="Copy a model")
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser("rm", help="Remove a model")
    p.add_argument("models", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("stop", help="Stop a running model")
    p.add_argument("model")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("info", help="Show the runtime: llama.cpp build, devices, CPU probe, threads")
    p.add_argument("--json", action="store_true", help="Print the JSON that GET /api/info returns")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", aliases=["start"], help="Start ollama-nb (Ollama's API on OLLAMA_HOST)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:

    config.configure_logging()
    parser = build_parser()
    args, extra = parser.parse_known_args(normalize_argv(list(sys.argv[1:] if argv is None else argv)))
    if extra and (getattr(args, "command", None) != "run" or any(a.startswith("-") for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # prompt words after a flag (`run MODEL --verbose why is the sky blue`), as cobra takes them
        args.prompt = [*args.prompt, *extra]
    if args.version:
        print(f"ollama-nb version is {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        args.func(args)
    except OllamaNbError as exc:
        if os.environ.get("OLLAMA_NB_DEBUG"):
            raise
        print(f"Error: {exc.for_humans()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        from ..manager.default import close_default

        close_default()
    return 0
