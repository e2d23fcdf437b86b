"""Backends beyond this kernel: named remote Ollama servers and OpenAI-compatible engines, and
the router that puts them beside the kernel's own models (``NAME/model`` runs on ``NAME``)."""

from .protocol import Backend
from .router import BackendHealth, Router
from .settings import LOCAL, BackendSpec

__all__ = ["LOCAL", "Backend", "BackendHealth", "BackendSpec", "Router"]
