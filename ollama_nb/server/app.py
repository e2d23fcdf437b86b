"""The aiohttp application: one factory that every way of serving (kernel thread, ``ollama-nb
serve``, tests) goes through, so all of them answer the same routes behind the same door."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from ..base import config
from .anthropic_compat import setup_anthropic
from .dashboard import setup_metrics
from .keys import MANAGER
from .native import setup_native
from .openai_compat import setup_openai
from .security import setup_security
from .streaming import setup_streaming

if TYPE_CHECKING:
    from ..manager.core import ModelManager

#: Largest JSON body accepted (images travel base64 inside chat requests). Blob uploads stream
#: to disk and are exempt.
DEFAULT_MAX_BODY = 64 << 20

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
    setup_openai(app)
    setup_anthropic(app)
    setup_metrics(app)
    return app
