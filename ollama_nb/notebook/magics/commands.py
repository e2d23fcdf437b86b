"""The ``%ollama`` subcommands, one function each, looked up in :data:`COMMANDS`.

Each takes the magics object, the parsed arguments and the cell body (None for a line magic)
and returns the cell's value: a pandas DataFrame for ``list``/``ps`` (an HTML table in a
notebook, aligned text in a terminal), None otherwise. Errors are raised; the magics turn them
into one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...backends.settings import route_from_env
from ...base.errors import InvalidRequest, OllamaNbError
from ...manager.info import format_info
from ...models.modelfile import parse_modelfile
from .. import connection as backends
from ..display import loaded_table, models_table
from ..sessions import DEFAULT_SESSION
from .converse import Interrupted, run_once

if TYPE_CHECKING:
    from ...api.types import ProgressResponse, ShowResponse
    from . import OllamaMagics


def show_progress(events: Iterable[ProgressResponse], what: str) -> None:
    """Status lines, and a progress bar per blob while bytes move: tqdm.auto draws an ipywidgets
    bar in a notebook and a text bar in a terminal. An interrupt closes the event stream."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}
    iterator = iter(events)
    try:
        for ev in iterator:
            if ev.digest and ev.total:
                bar = bars.get(ev.digest)
                if bar is None:
                    bar = bars[ev.digest] = tqdm(total=ev.total, desc=ev.status[:40], unit="B",
                                                 unit_scale=True, leave=True)
                bar.update((ev.completed or 0) - bar.n)
            else:
                print(ev.status)
    except KeyboardInterrupt:
        raise Interrupted(f"{what} stopped") from None
    finally:
        for bar in bars.values():
            bar.close()
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


# ---- model store ---------------------------------------------------------------------------------


def cmd_pull(m: OllamaMagics, args: Any, cell: str | None) -> None:
    name = m.qualified(args.model, args.backend)
    show_progress(m.backend.pull(name, insecure=args.insecure), f"pull of {name}")


def cmd_push(m: OllamaMagics, args: Any, cell: str | None) -> None:
    show_progress(m.backend.push(args.model, insecure=args.insecure), f"push of {args.model}")


def _one_backend(m: OllamaMagics, name: str | None) -> Any:
    """``--backend NAME``'s own client (its names unprefixed), or everything."""
    from ...backends.settings import LOCAL

    if not name:
        return None
    return m.local_backend if name == LOCAL else backends.router().entry(name).backend


def _skipped(backend: Any) -> None:
    """One line per backend a listing had to leave out; the table shows the others."""
    for name, line in getattr(backend, "problems", {}).items():
        if name in getattr(backend, "names", list)():
            print(f"Error: {line} (left out of this listing)", file=sys.stderr)


def cmd_list(m: OllamaMagics, args: Any, cell: str | None) -> Any:
    backend = _one_backend(m, args.backend) or m.backend
    table = models_table(backend.list())
    _skipped(backend)
    return table


def cmd_ps(m: OllamaMagics, args: Any, cell: str | None) -> Any:
    backend = _one_backend(m, args.backend) or m.backend
    table = loaded_table(backend.ps())
    _skipped(backend)
    return table


def cmd_info(m: OllamaMagics, args: Any, cell: str | None) -> None:

    print(format_info(m.backend.info()), end="")


def show_text(info: ShowResponse, args: Any) -> str:
    """``ollama show`` output: one section, or the overview."""
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag, False):
            return getattr(info, flag) or ""
    arch = info.model_info.get("general.architecture", info.details.family)
    rows: list[tuple[str, list[tuple[str, Any]]]] = [
        ("Model", [("architecture", arch), ("parameters", info.details.parameter_size),
                   ("context length", info.model_info.get(f"{arch}.context_length", "")),
                   ("embedding length", info.model_info.get(f"{arch}.embedding_length", "")),
                   ("quantization", info.details.quantization_level)]),
        ("Capabilities", [(c, "") for c in info.capabilities or []]),
    ]
    if info.parameters:
        params = []
        for line in info.parameters.splitlines():
            key, _, value = line.strip().partition(" ")
            params.append((key, value.strip()))
        rows.append(("Parameters", params))
    if info.system:
        rows.append(("System", [(info.system.splitlines()[0], "")]))
    if info.license:
        rows.append(("License", [(info.license.splitlines()[0], "")]))
    out: list[str] = []
    for title, items in rows:
        out.append(f"  {title}")
        out.extend(f"    {key:<20}{value}".rstrip() for key, value in items)
        out.append("")
    return "\n".join(out)


def cmd_show(m: OllamaMagics, args: Any, cell: str | None) -> None:
    args.model = m.qualified(args.model, args.backend)
    print(show_text(m.backend.show(args.model, verbose=args.verbose), args))


def cmd_rm(m: OllamaMagics, args: Any, cell: str | None) -> None:
    for name in args.models:
        m.backend.delete(name)
        print(f"deleted '{name}'")


def cmd_cp(m: OllamaMagics, args: Any, cell: str | None) -> None:
    m.backend.copy(args.source, args.destination)
    print(f"copied '{args.source}' to '{args.destination}'")


def cmd_create(m: OllamaMagics, args: Any, cell: str | None) -> None:

    if args.file or not (cell and cell.strip()):
        path = args.file or "Modelfile"
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8-sig", errors="replace")
        except OSError as exc:

            raise InvalidRequest(
                f"open {path}: {(exc.strerror or str(exc)).lower()}",
                hint="write the Modelfile in the cell body: %%ollama create NAME",
            ) from None
        base = os.path.dirname(os.path.abspath(path))
    else:
        text, base = cell or "", os.getcwd()
    parse_modelfile(text)  # a syntax error is reported before anything is written
    show_progress(m.backend.create(args.model, text, base_dir=base, quantize=args.quantize),
                  f"create of {args.model}")


# ---- running ------------------------------------------------------------------------------------


def cmd_run(m: OllamaMagics, args: Any, cell: str | None) -> Any:
    return run_once(m, args, cell)


def cmd_stop(m: OllamaMagics, args: Any, cell: str | None) -> None:
    if not m.backend.unload(args.model):
        raise OllamaNbError(f'couldn\'t find model "{args.model}" to stop')
    print(f"stopped '{args.model}'")


# ---- server and connection ----------------------------------------------------------------------


def cmd_serve(m: OllamaMagics, args: Any, cell: str | None) -> None:
    if args.stop:
        if m.server is not None and getattr(m.server, "running", False):
            url = m.server.url
            m.server.stop()
            m.server = None
            print(f"stopped the server at {url}")
        else:
            print("no server started by %ollama serve is running")
        return
    if m.server is not None and getattr(m.server, "running", False):
        print(f"already serving at {m.server.url} (stop it with %ollama serve --stop)")
        return

    if backends.connected_url():
        raise OllamaNbError(
            f"connected to {backends.connected_url()}: serving needs this kernel's own models",
            hint="run `%ollama connect --local` first",
        )
    try:
        from ...server.lifecycle import serve
    except ImportError as exc:
        raise OllamaNbError(f"the HTTP server is not available in this installation ({exc})") from None
    route = m.route_backends or route_from_env()
    m.server = serve(manager=backends.router().bound(m.local_backend) if route else m.local_backend,
                     host=args.host, port=args.port)
    print(f"serving the Ollama API at {m.server.url}"
          + (" (routing NAME/model to the named backends)" if route else ""))
    print("  clients in this kernel find it through OLLAMA_HOST; stop it with %ollama serve --stop")


def cmd_connect(m: OllamaMagics, args: Any, cell: str | None) -> None:
    if args.local:
        m.host = None
        print("using this kernel's models")
        return
    if len(args.target) > 2:
        raise InvalidRequest("connect takes NAME URL, or a URL alone")
    if len(args.target) == 2:
        connect_named(*args.target, kind=args.kind, api_key_env=args.api_key_env)
        return
    if not args.target:
        named = backends.router().names()
        print(f"using {backends.describe(m.local_backend)}"
              + (f", with the backends {', '.join(named)}" if named else ""))
        return
    from ...client import Client

    client = Client(args.target[0])
    version = client.version()  # fails here, and the current connection stays, if unreachable
    m.host = client.url
    print(f"connected to {client.url}" + (f" (version {version})" if version else ""))


def connect_named(name: str, url: str, *, kind: str = "ollama", api_key_env: str | None = None) -> None:
    """Register the backend, then say how it answers: a backend that is down now is still
    registered (a cluster comes back), with one line saying what is wrong."""
    spec = backends.register(name, url, kind=kind, api_key_env=api_key_env)
    (health,) = [h for h in backends.router().health() if h.name == spec.name]
    where = f"{spec.kind} at {health.url}"
    if health.ok:
        print(f"connected backend {spec.name!r} ({where}): {health.models} model(s), "
              f"addressed as {spec.name}/MODEL")
    else:
        print(f"Error: {health.status}", file=sys.stderr)
        print(f"registered backend {spec.name!r} ({where}) anyway; `%ollama backends` checks it again")


def cmd_backends(m: OllamaMagics, args: Any, cell: str | None) -> Any:
    from ..display import backends_table

    router = backends.router()
    for source, line in router.problems.items():
        if source not in router.names():
            print(f"Error: {line}", file=sys.stderr)
    return backends_table(router.bound(m.local_backend).health())


def cmd_disconnect(m: OllamaMagics, args: Any, cell: str | None) -> None:
    if not backends.unregister(args.name):
        known = ", ".join(backends.router().names()) or "none"
        raise InvalidRequest(f"no backend named {args.name!r}", hint=f"named backends: {known}")
    print(f"disconnected backend {args.name!r}")


# ---- sessions -----------------------------------------------------------------------------------


def cmd_history(m: OllamaMagics, args: Any, cell: str | None) -> None:

    if args.all:
        sessions = list(m.sessions)
        print("\n\n".join(s.transcript() for s in sessions) if sessions else "no conversations yet")
        return
    name = args.session or DEFAULT_SESSION
    if name not in m.sessions:
        known = ", ".join(repr(n) for n in m.sessions.names()) or "none yet"
        raise OllamaNbError(f"no session {name!r} (sessions: {known})")
    print(m.sessions.get(name).transcript())


def cmd_reset(m: OllamaMagics, args: Any, cell: str | None) -> None:

    if args.all:
        print(f"forgot {m.sessions.reset_all()} conversation(s)")
        return
    name = args.session or DEFAULT_SESSION
    if m.sessions.reset(name):
        print(f"forgot session {name!r}")
    else:
        print(f"session {name!r} was already empty")


def cmd_help(m: OllamaMagics, args: Any, cell: str | None) -> None:
    print(m.help_text())


COMMANDS: dict[str, Callable[[Any, Any, str | None], Any]] = {
    "pull": cmd_pull,
    "push": cmd_push,
    "list": cmd_list,
    "ls": cmd_list,
    "ps": cmd_ps,
    "info": cmd_info,
    "show": cmd_show,
    "rm": cmd_rm,
    "cp": cmd_cp,
    "create": cmd_create,
    "run": cmd_run,
    "stop": cmd_stop,
    "serve": cmd_serve,
    "connect": cmd_connect,
    "backends": cmd_backends,
    "disconnect": cmd_disconnect,
    "history": cmd_history,
    "reset": cmd_reset,
    "help": cmd_help,
}

# Subcommands that use the cell body of %%ollama; the others refuse one.
TAKES_CELL = {"create", "run"}


__all__ = ["COMMANDS", "TAKES_CELL", "show_progress", "show_text"]
