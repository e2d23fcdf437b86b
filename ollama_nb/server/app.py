"""The aiohttp application: one factory that every way of serving (kernel thread, ``ollama-nb
serve``, tests) goes through, so all of them answer the same routes behind the same door."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from ..base import config
from .keys import MANAGER
from .native import setup_native
from .security import setup_security
from .streaming import setup_streaming

if TYPE_CHECKING:
    from ..manager.core import ModelManager

#: Largest JSON body accepted (images travel base64 inside chat requests). Blob uploads stream
#: to disk and are exempt.
DEFAULT_MAX_BODY = 64 << 20

# Route modules owned elsewhere, installed when present: (module, setup function).
_OPTIONAL_SETUPS = (("openai_compat", "setup_openai"), ("dashboard", "setup_metrics"))


def _install_optional(app: web.Application) -> None:
    """``/v1/*`` and ``/metrics`` live in their own modules; a missing module is skipped, while a
    module that exists but fails to import still raises (a bug must not look like absence)."""
    for module, function in _OPTIONAL_SETUPS:
        name = f"{__package__}.{module}"
        if importlib.util.find_spec(name) is None:
            continue
        getattr(importlib.import_module(name), function)(app)


def make_app(
    manager: ModelManager,
    *,
    api_key: str | None = None,
    origins: Iterable[str] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    allowed_hosts: Iterable[str] | None = None,
) -> web.Application:
    """Ollama's HTTP API over ``manager``.

    ``api_key`` (default ``OLLAMA_NB_API_KEY``; off when unset) requires ``Authorization:
    Bearer``; ``origins`` (default ``OLLAMA_ORIGINS`` plus Ollama's built-in list) are the
    browser origins allowed; ``allowed_hosts`` (default ``OLLAMA_NB_ALLOWED_HOSTS``) extends the
    Host names a loopback-bound server answers.
    """
    app = web.Application(client_max_size=max_body)
    app[MANAGER] = manager
    setup_security(
        app,
        api_key=api_key if api_key is not None else config.api_key(),
        origins=list(origins) if origins is not None else config.origins(),
        max_body=max_body,
        allowed_hosts=list(allowed_hosts) if allowed_hosts is not None else config.allowed_hosts(),
    )
    setup_streaming(app)
    setup_native(app)
    _install_optional(app)
    return app
