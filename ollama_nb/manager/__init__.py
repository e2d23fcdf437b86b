"""The front door: :class:`ModelManager` (``core``), its per-request records and the runtime
report (``info``). Imported lazily, so that ``records`` stays cheap for the layers that read it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import ModelManager

__all__ = ["ModelManager"]


def __getattr__(name: str) -> Any:
    if name == "ModelManager":
        from .core import ModelManager

        return ModelManager
    raise AttributeError(f"module 'ollama_nb.manager' has no attribute {name!r}")
