"""Typed keys for what the aiohttp application carries, shared by every route module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..manager.core import ModelManager
    from ..observe.metrics import MetricsRecorder

MANAGER: web.AppKey[ModelManager] = web.AppKey("ollama_nb.manager")
METRICS: web.AppKey[MetricsRecorder] = web.AppKey("ollama_nb.metrics")
