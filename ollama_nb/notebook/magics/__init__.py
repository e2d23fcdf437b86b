"""IPython magics: ``%ollama <subcommand>``, ``%%chat`` and ``%%generate``.

``%load_ext ollama_nb`` registers one :class:`OllamaMagics` per shell. Its settings are traitlets,
so ``%config OllamaMagics.default_model = "gemma3:270m"`` or an ``ipython_config.py`` set them.
The magics call the models in this kernel (``ollama_nb.default_manager()``), or a server named
with ``%ollama connect URL`` / ``OllamaMagics.host``, and beside them the named backends of
``%ollama connect NAME URL`` / ``OllamaMagics.backends`` (``NAME/model`` runs there); see
:mod:`ollama_nb.notebook.connection`.

Every failure is one line on stderr (``Error: model 'x' not found (try `%ollama pull x`)``), a
bad argument prints the usage, and the shell stays usable. This package is the only place that
imports ``IPython.core.magic``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Dict, Enum, Float, Int, Unicode, observe

from .. import connection as backends
from ..display import FORMATS, error_line
from ..sessions import Sessions
from .converse import EmptyPrompt, Interrupted, chat_turn, generate_turn
from .parsing import ArgError, HelpShown, chat_parser, generate_parser, ollama_parser, parse


@magics_class
class OllamaMagics(Magics):
    """``%ollama``, ``%%chat`` and ``%%generate``; configurable with ``%config OllamaMagics.*``."""

    default_model = Unicode(
        "smollm2:135m", help="Model for %%chat/%%generate when neither -m nor the session names one."
    ).tag(config=True)
    host = Unicode(
        None, allow_none=True,
        help="URL of an Ollama server to use instead of this kernel's models (None: in-kernel). "
        "%ollama connect sets it.",
    ).tag(config=True)
    backends = Dict(
        help="Named backends to register when the extension loads, for example "
        '{"gpu": {"url": "http://gpu-box:11434"}, "vllm": {"url": "http://vllm:8000/v1", "kind": "openai", '
        '"api_key_env": "VLLM_API_KEY"}} (the same shape as OLLAMA_NB_BACKENDS). Keys are read from the '
        "environment variables named, never stored here.",
    ).tag(config=True)
    route_backends = Bool(
        False, help="Let the server %ollama serve starts route NAME/model requests to the named backends "
        "(also on with OLLAMA_NB_ROUTE_BACKENDS=1).",
    ).tag(config=True)
    max_history = Int(
        20, help="Past turns of a %%chat session sent with each prompt (0: none, -1: all).",
    ).tag(config=True)
    stream_interval = Float(
        0.1, help="Seconds between updates of a streaming reply (0: every token).",
    ).tag(config=True)
    stream_to = Enum(
        ["auto", "display", "text"], "auto",
        help="Where a reply streams: a display handle updated in place (notebook), plain text "
        "(terminal), or auto (display when running in a Jupyter kernel).",
    ).tag(config=True)
    default_format = Enum(list(FORMATS), "markdown", help="Default --format of %%chat.").tag(config=True)
    options = Dict(help="Model options applied to every request (a cell's --options win).").tag(config=True)
    keep_alive = Unicode(None, allow_none=True, help='How long models stay loaded (e.g. "10m").').tag(config=True)
    interpolate = Bool(True, help="Fill {var}, {In[n]}, {Out[n]} in prompts from the namespace.").tag(config=True)
    debug = Bool(False, help="Raise errors with their traceback instead of one line.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.sessions = Sessions()
        self.server: Any = None  # the handle of a server started by %ollama serve
        self._manager: Any = None
        if self.host:
            backends.connect(self.host)
        self._register_configured(self.backends)

    # ---- which models -----------------------------------------------------------------------

    @observe("host")
    def _host_changed(self, change: Any) -> None:
        backends.connect(change["new"] or None)

    @observe("backends")
    def _backends_changed(self, change: Any) -> None:
        self._register_configured(change["new"])

    @staticmethod
    def _register_configured(configured: dict[str, Any]) -> None:
        from ...backends.settings import specs_from_mapping

        for spec in specs_from_mapping(configured or {}, source="OllamaMagics.backends"):
            backends.router().register(spec)

    def qualified(self, model: str, backend: str | None) -> str:
        """``model`` as the name that runs it on ``backend`` (``--backend NAME``)."""
        from ...backends.settings import LOCAL

        if not backend or backend == LOCAL or model.startswith(f"{backend}/"):
            return model
        backends.router().entry(backend)  # an unknown name is an error, not a local model
        return f"{backend}/{model}"

    @property
    def local_backend(self) -> Any:
        """This kernel's models (or the one server ``%ollama connect URL`` switched to)."""
        if backends.connected_url():
            return backends.local()
        return self._manager if self._manager is not None else backends.local()

    def use_manager(self, manager: Any) -> None:
        """Run these magics on ``manager`` (a ModelManager, or anything with its methods)
        instead of ``ollama_nb.default_manager()``; ``%ollama connect URL`` still wins."""
        self._manager = manager

    @property
    def backend(self) -> Any:
        """What the magics talk to: the local backend, or a router over it and the named ones."""
        return backends.current(self.local_backend)

    # ---- the magics -------------------------------------------------------------------------

    @line_cell_magic
    def ollama(self, line: str, cell: str | None = None) -> Any:
        """Manage and run models like the ollama CLI: %ollama help lists the subcommands."""
        from .commands import COMMANDS, TAKES_CELL

        def run() -> Any:
            parser = ollama_parser()
            if not line.strip():
                print(self.help_text())
                return None
            args = parse(parser, line)
            if cell is not None and cell.strip() and args.command not in TAKES_CELL:
                raise ArgError(f"%%ollama {args.command} takes no cell body (only create and run do)",
                               parser.format_usage())
            return COMMANDS[args.command](self, args, cell)

        return self._guard(run)

    @line_cell_magic
    def chat(self, line: str, cell: str | None = None) -> Any:
        """Chat with a model; the cell body is the prompt. %%chat -h lists the options."""
        if cell is None:
            return self._line_form("%%chat", line, chat_parser)
        return self._guard(lambda: chat_turn(self, parse(chat_parser(), line), cell))

    @line_cell_magic
    def generate(self, line: str, cell: str | None = None) -> Any:
        """Complete the cell body with a model (no conversation). %%generate -h lists the options."""
        if cell is None:
            return self._line_form("%%generate", line, generate_parser)
        return self._guard(lambda: generate_turn(self, parse(generate_parser(), line), cell))

    # ---- helpers ----------------------------------------------------------------------------

    def _line_form(self, name: str, line: str, make: Callable[[], Any]) -> None:
        if line.strip() in ("-h", "--help"):
            print(make().format_help())
            return
        print(f"Error: {name} is a cell magic: put {name} [options] on the first line of a cell "
              "and the prompt below it", file=sys.stderr)
        return

    def _guard(self, run: Callable[[], Any]) -> Any:
        """Run one magic: errors become one line on stderr, never a traceback."""
        try:
            return run()
        except HelpShown:
            return None
        except ArgError as exc:
            if exc.usage:
                print(exc.usage, file=sys.stderr)
            print(f"Error: {exc.message}", file=sys.stderr)
            return None
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise Interrupted("stopped") from None
        except EmptyPrompt as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return None
        except Exception as exc:
            if self.debug:
                raise
            print(f"Error: {error_line(exc)}", file=sys.stderr)
            return None

    def help_text(self) -> str:
        return "\n\n".join(p.format_help() for p in (ollama_parser(), chat_parser(), generate_parser()))

    def stop_server(self) -> None:
        """Stop the server that %ollama serve started here, if it runs."""
        server, self.server = self.server, None
        if server is not None and getattr(server, "running", False):
            server.stop()


def _registered(shell: Any) -> OllamaMagics | None:
    return shell.magics_manager.registry.get("OllamaMagics") if shell is not None else None


def load_ipython_extension(shell: Any) -> OllamaMagics:
    """``%load_ext ollama_nb``: register the magics (once per shell)."""
    existing = _registered(shell)
    if existing is not None:
        return existing
    magics = OllamaMagics(shell=shell)
    shell.register_magics(magics)
    return magics


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext ollama_nb``: stop a server started by ``%ollama serve``, remove the magics.
    Loaded models, other servers and running requests are left alone."""
    magics = _registered(shell)
    if magics is None:
        return
    magics.stop_server()
    table = shell.magics_manager.magics
    for kind, name in (("line", "ollama"), ("cell", "ollama"), ("line", "chat"), ("cell", "chat"),
                       ("line", "generate"), ("cell", "generate")):
        bound = table[kind].get(name)
        if getattr(bound, "__self__", None) is magics:
            del table[kind][name]
    shell.magics_manager.registry.pop("OllamaMagics", None)
    if magics in getattr(shell, "configurables", []):
        shell.configurables.remove(magics)


__all__ = ["OllamaMagics", "load_ipython_extension", "unload_ipython_extension"]
