"""The process-wide manager that the CLI, the magics, the widgets and a kernel's server share.

It lives here, not in the package root, so that the faces above can reach it without importing
``ollama_nb`` itself (the root is only a lazy facade over the layers).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import ModelManager

_manager: ModelManager | None = None
_lock = threading.Lock()


def default_manager() -> ModelManager:
    """The one shared :class:`ModelManager`, made on first use."""
    global _manager
    with _lock:
        if _manager is None:
            from .core import ModelManager

            _manager = ModelManager()
        return _manager


def close_default() -> None:
    """Unload the shared manager's models, if it was ever made (the CLI does this on exit)."""
    if _manager is not None:
        _manager.close()
