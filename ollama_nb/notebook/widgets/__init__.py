"""ipywidgets for notebooks: a chat panel, a model manager and a side-by-side comparison.

Each runs model work in a background thread and updates itself at most a few times per second,
so the kernel stays responsive (a Stop click, other cells, the HTTP server's clients). This
package is the only place that imports ``ipywidgets``; it loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chat_panel import ChatPanel
    from .compare import ComparisonView
    from .model_manager import ModelManagerPanel

__all__ = ["ChatPanel", "ComparisonView", "ModelManagerPanel"]

_WHERE = {"ChatPanel": "chat_panel", "ModelManagerPanel": "model_manager", "ComparisonView": "compare"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ollama_nb.notebook.widgets' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
