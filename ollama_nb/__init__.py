"""ollama_nb: Ollama, rebuilt for Jupyter.

Heavy parts (llama.cpp, pydantic models, the server) load on first use so that
``import ollama_nb`` stays fast in a kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base.version import __version__

if TYPE_CHECKING:
    from .base.errors import OllamaNbError
    from .manager.core import ModelManager
    from .notebook.functions import (
        chat,
        compare,
        connect,
        disconnect,
        embed,
        generate,
        list_backends,
    )
    from .server.lifecycle import serve

__all__ = [
    "ModelManager",
    "OllamaNbError",
    "__version__",
    "chat",
    "compare",
    "connect",
    "default_manager",
    "disconnect",
    "embed",
    "generate",
    "list_backends",
    "load_ipython_extension",
    "serve",
    "unload_ipython_extension",
]

_NOTEBOOK_API = frozenset({"chat", "generate", "embed", "compare", "connect", "disconnect", "list_backends"})

def default_manager() -> ModelManager:
    """The process-wide manager that the CLI, magics and widgets share."""
    from .manager.default import default_manager as shared

    return shared()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ollama_nb``: the ``%ollama``, ``%%chat`` and ``%%generate`` magics."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext ollama_nb``: stops a server started by ``%ollama serve``, nothing else."""
    from .notebook.magics import unload_ipython_extension as unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    if name in _NOTEBOOK_API:  # ollama_nb.chat(...), .generate, .embed, .compare
        from .notebook import functions as notebook_api

        return getattr(notebook_api, name)
    if name == "ModelManager":
        from .manager.core import ModelManager

        return ModelManager
    if name == "OllamaNbError":
        from .base.errors import OllamaNbError

        return OllamaNbError
    if name == "plots":  # ollama_nb.plots.figure(...): matplotlib loads only when asked for
        from .observe import plots

        return plots
    if name == "widgets":
        from .notebook import widgets

        return widgets
    if name == "serve":  # the server (aiohttp) loads only when asked for
        from .server.lifecycle import serve

        return serve
    raise AttributeError(f"module 'ollama_nb' has no attribute {name!r}")
