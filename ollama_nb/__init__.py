"""ollama_nb: Ollama, rebuilt for Jupyter.

Heavy parts (llama.cpp, pydantic models, the server) load on first use so that
``import ollama_nb`` stays fast in a kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .errors import OllamaNbError
    from .manager import ModelManager

__all__ = ["ModelManager", "OllamaNbError", "__version__", "default_manager"]

_default_manager: Any = None


def default_manager() -> ModelManager:
    """The process-wide manager that the CLI, magics and widgets share."""
    global _default_manager
    if _default_manager is None:
        from .manager import ModelManager

        _default_manager = ModelManager()
    return _default_manager


def __getattr__(name: str) -> Any:
    if name == "ModelManager":
        from .manager import ModelManager

        return ModelManager
    if name == "OllamaNbError":
        from .errors import OllamaNbError

        return OllamaNbError
    raise AttributeError(f"module 'ollama_nb' has no attribute {name!r}")
