"""Which model servers the notebook faces talk to, and how they read a streamed reply.

The magics, the widgets and the notebook API never care where a model runs: in this kernel (a
:class:`~ollama_nb.manager.ModelManager`), behind an Ollama server (a
:class:`~ollama_nb.client.Client`) or an OpenAI-compatible engine; all satisfy
:class:`~ollama_nb.backends.protocol.Backend`, with the same method names and return types.

* the *local* backend is the kernel's own manager, or the one a caller injected with :func:`use`
  (tests, embedding apps), or the one server ``%ollama connect URL`` switched every face to;
* *named* backends (``%ollama connect NAME URL``, :func:`register`, ``OLLAMA_NB_BACKENDS``) sit
  beside it, and a model named ``NAME/model`` runs there. While any is registered, :func:`current`
  is a :class:`~ollama_nb.backends.router.Router` over all of them.

:func:`read_reply` is the one loop that consumes a reply stream for all faces: it buffers
tokens, flushes them through a :class:`~ollama_nb.notebook.throttle.Throttle`, measures the time to the
first token, stops on a cancel flag (Stop button) or a KeyboardInterrupt (kernel interrupt) and
always closes the stream, which cancels generation before the next token. A backend that breaks
off mid-reply leaves the text so far in the result, marked, with the error's line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from ..api.types import TimedReply
from ..backends.protocol import Backend
from ..backends.router import Router
from ..backends.settings import ENV_BACKENDS, BackendSpec, specs_from_env
from ..base.errors import OllamaNbError
from ..base.timings import Timings
from .display import ChatResult, error_line
from .throttle import DEFAULT_INTERVAL, Throttle

log = logging.getLogger("ollama_nb.notebook")

_lock = threading.Lock()
_injected: Backend | None = None  # a manager given by the caller (tests, embedding apps)
_client: Backend | None = None  # set by connect(url)
_env_loaded = False


def local() -> Backend:
    """The connected server if any, else the injected manager, else the kernel's own manager."""
    with _lock:
        chosen = _client or _injected
    if chosen is not None:
        return chosen
    from ..manager.default import default_manager

    return default_manager()


_router = Router(local)


def router() -> Router:
    """The one router of this process (the named backends), with those of ``OLLAMA_NB_BACKENDS``
    registered on first use."""
    global _env_loaded
    with _lock:
        load, _env_loaded = not _env_loaded, True
    if load:
        try:
            for spec in specs_from_env():
                _router.register(spec)
        except OllamaNbError as exc:  # one line for the admin's typo; the kernel's models still work
            _router.problems[ENV_BACKENDS] = exc.for_humans()
            log.warning("%s", exc.for_humans())
    return _router


def current(local_backend: Backend | None = None) -> Backend:
    """What the faces talk to: the local backend (``local_backend`` if given) when no named
    backend is registered, else a router over it and the named ones."""
    chosen = local_backend if local_backend is not None else local()
    shared = router()
    if not shared.names():
        return chosen
    return shared if local_backend is None else shared.bound(chosen)


def register(name: str, url: str, *, kind: str = "ollama", api_key_env: str | None = None,
             timeout: float | None = None) -> BackendSpec:
    """Add a named backend (replacing one of the same name); its models are ``NAME/model``."""
    spec = BackendSpec(name=name, url=url, kind=kind, api_key_env=api_key_env)  # type: ignore[arg-type]
    router().register(spec, timeout=timeout)
    return spec


def unregister(name: str) -> bool:
    """Remove a named backend; False when there was none of that name."""
    return router().remove(name)


def use(backend: Backend | None) -> Backend | None:
    """Make ``backend`` the in-kernel backend (None: back to ``default_manager()``).
    Returns the previous one so a caller can restore it."""
    global _injected
    with _lock:
        previous, _injected = _injected, backend
    return previous


def connect(url: str | None) -> Backend:
    """Talk to the server at ``url`` from now on; ``None`` goes back to the in-kernel models."""
    global _client
    if url is None:
        with _lock:
            _client = None
        return current()
    from ..client import Client

    client = Client(url)
    with _lock:
        _client = client
    return client


def connected_url() -> str | None:
    """The URL of the connected server, or None when the models run in this kernel."""
    with _lock:
        client = _client
    return getattr(client, "url", None) if client is not None else None


def describe(backend: Backend | None = None) -> str:
    backend = backend or local()
    url = getattr(backend, "url", None)
    return f"server at {url}" if url else "this kernel's models"


# ---- reading a reply stream -------------------------------------------------------------------


def chunk_text(chunk: Any) -> str:
    """The text a chat or generate chunk adds to the reply."""
    message = getattr(chunk, "message", None)
    if message is not None:
        return message.content or ""
    return getattr(chunk, "response", "") or ""


def read_reply(
    chunks: Iterator[Any],
    *,
    model: str,
    kind: str = "chat",
    started_ns: int | None = None,
    on_text: Callable[[str], None] | None = None,
    interval: float = DEFAULT_INTERVAL,
    cancel: threading.Event | None = None,
) -> ChatResult:
    """Consume a reply stream into a :class:`ChatResult`.

    ``on_text`` receives the whole text so far, throttled to one call per ``interval`` plus a
    last one at the end. ``cancel`` (checked after every chunk) and a KeyboardInterrupt both end
    the stream early; the result then has ``interrupted=True`` and the partial text. So does a
    stream that fails after it began (a remote backend that died mid-reply), with ``error`` set
    to the failure's one line (a failure before the first chunk is raised). The stream is closed in every case, which tells the model's worker
    to stop before its next token.
    """
    started = time.perf_counter_ns() if started_ns is None else started_ns
    parts: list[str] = []
    final: Any = None
    ttft: int | None = None
    interrupted = False
    error: str | None = None
    received = False
    throttle = Throttle((lambda: on_text("".join(parts))) if on_text else (lambda: None), interval)
    try:
        for chunk in chunks:
            received = True
            text = chunk_text(chunk)
            if text:
                if ttft is None:
                    ttft = time.perf_counter_ns() - started
                parts.append(text)
                throttle.poke()
            if getattr(chunk, "done", False):
                final = chunk
            if cancel is not None and cancel.is_set() and final is None:
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    except OllamaNbError as exc:
        if not received:  # failed before anything came (a model that cannot load): nothing to keep
            raise
        interrupted, error = True, error_line(exc)  # broke off after it began: keep what arrived
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if final is None:
        interrupted = True
    try:
        throttle.close()
    except KeyboardInterrupt:  # the stream is already closed; keep what arrived
        interrupted = True
    result = ChatResult(
        text="".join(parts),
        model=model,
        kind=kind,
        done_reason=getattr(final, "done_reason", None) if final is not None else None,
        interrupted=interrupted,
        timings=None if final is None else _timings_of(final, ttft),
        context=getattr(final, "context", None) if final is not None else None,
        error=error,
    )
    return result


def _timings_of(final: Any, ttft: int | None) -> Timings:
    """The reply's own timings when it was made in this process (the manager measured its time
    to first token from the request's arrival); for a remote reply, its Ollama fields with the
    time to first token measured here, on the caller's side."""
    timings = final.timings if isinstance(final, TimedReply) else Timings.from_ollama(final)
    if timings.ttft_duration is not None or ttft is None:
        return timings
    return replace(timings, ttft_duration=ttft, client_side=(*timings.client_side, "ttft_duration"))


__all__ = ["Backend", "chunk_text", "connect", "connected_url", "current", "describe", "local", "read_reply",
           "register", "router", "unregister", "use"]
