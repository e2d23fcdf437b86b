"""Settings read from the environment, with Ollama's names and defaults.

Read on every call (not cached at import) so a notebook can change ``os.environ`` and the next
request sees it, as a restarted ``ollama serve`` would.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .durations import keep_alive_seconds


def _env(name: str) -> str:
    return os.environ.get(name, "").strip().strip("'\"")


def _truthy(name: str) -> bool:
    return _env(name).lower() in {"1", "true", "yes", "on", "t"}


def models_dir() -> Path:
    """``$OLLAMA_MODELS`` or ``~/.ollama/models``: the same store a real Ollama uses."""
    value = _env("OLLAMA_MODELS")
    return Path(value).expanduser() if value else Path.home() / ".ollama" / "models"


def keep_alive_default() -> float:
    """``OLLAMA_KEEP_ALIVE`` in seconds (default 5 minutes; negative = forever)."""
    value = _env("OLLAMA_KEEP_ALIVE")
    if not value:
        return 300.0
    return keep_alive_seconds(value, allow_bare_number_string=True)


def max_loaded_models() -> int:
    """``OLLAMA_MAX_LOADED_MODELS``; 0 (default) means 3 per GPU, 3 on CPU."""
    value = _env("OLLAMA_MAX_LOADED_MODELS")
    n = int(value) if value.isdigit() else 0
    return n if n > 0 else 3


def context_length_default() -> int:
    """``OLLAMA_CONTEXT_LENGTH`` or 4096 (Ollama's tier for machines under 24 GiB of VRAM)."""
    value = _env("OLLAMA_CONTEXT_LENGTH")
    return int(value) if value.isdigit() and int(value) > 0 else 4096


def flash_attention() -> bool | None:
    """``OLLAMA_FLASH_ATTENTION``: True/False when set, None for automatic."""
    value = _env("OLLAMA_FLASH_ATTENTION").lower()
    if not value:
        return None
    return value in {"1", "true", "yes", "on", "t"}


def force_cpu() -> bool:
    """``OLLAMA_LLM_LIBRARY=cpu`` (or any ``cpu*`` variant) keeps every layer on the CPU."""
    return _env("OLLAMA_LLM_LIBRARY").lower().startswith("cpu")


def gpu_overhead_bytes() -> int:
    """``OLLAMA_GPU_OVERHEAD``: VRAM bytes to leave free per GPU."""
    value = _env("OLLAMA_GPU_OVERHEAD")
    return int(value) if value.isdigit() else 0


def debug_level() -> int:
    """``OLLAMA_DEBUG``: 0 off, 1 debug, 2 trace."""
    value = _env("OLLAMA_DEBUG").lower()
    if value.isdigit():
        return int(value)
    return 1 if value in {"true", "yes", "on", "t"} else 0


def no_prune() -> bool:
    """``OLLAMA_NOPRUNE``: keep unreferenced blobs and partial downloads."""
    return _truthy("OLLAMA_NOPRUNE")


def num_parallel() -> int:
    value = _env("OLLAMA_NUM_PARALLEL")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def max_queue() -> int:
    value = _env("OLLAMA_MAX_QUEUE")
    return int(value) if value.isdigit() and int(value) > 0 else 512


def configure_logging() -> None:
    """Verbose logs only when ``OLLAMA_DEBUG`` asks for them."""
    level = logging.DEBUG if debug_level() else logging.WARNING
    logging.getLogger("ollama_nb").setLevel(level)
