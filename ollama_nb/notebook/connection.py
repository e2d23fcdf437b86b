"""Which model server the notebook faces talk to, and how they read a streamed reply.

The magics, the widgets and the notebook API never care whether the models run in this kernel
(a :class:`~ollama_nb.manager.ModelManager`) or behind an Ollama-compatible HTTP server (an
:class:`~ollama_nb.client.Client`): both satisfy :class:`Backend`, with the same method names
and the same return types (``ollama_nb.api.types``). ``%ollama connect URL`` switches every face
at once by calling :func:`connect`; tests inject a manager with :func:`use`.

:func:`read_reply` is the one loop that consumes a reply stream for all faces: it buffers
tokens, flushes them through a :class:`~ollama_nb.notebook.throttle.Throttle`, measures the time to the
first token, stops on a cancel flag (Stop button) or a KeyboardInterrupt (kernel interrupt) and
always closes the stream, which cancels generation before the next token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..api.types import TimedReply
from ..base.timings import Timings
from .display import ChatResult
from .throttle import DEFAULT_INTERVAL, Throttle

if TYPE_CHECKING:
    from ..api.types import (
        EmbedResponse,
        InfoResponse,
        ListResponse,
        ProcessResponse,
        ProgressResponse,
        ShowResponse,
    )


@runtime_checkable
class Backend(Protocol):
    """What the notebook faces need from a model server (ModelManager and Client both fit)."""

    def list(self) -> ListResponse: ...

    def show(self, name: str, *, verbose: bool = False) -> ShowResponse: ...

    def ps(self) -> ProcessResponse: ...

    def info(self) -> InfoResponse: ...

    def pull(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]: ...

    def push(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]: ...

    def create(self, name: str, modelfile: str | None = None, *, base_dir: str | None = None,
               quantize: str | None = None) -> Iterator[ProgressResponse]: ...

    def copy(self, source: str, destination: str) -> None: ...

    def delete(self, name: str) -> None: ...

    def unload(self, name: str) -> bool: ...

    def chat(self, request: Any = None, /, **fields: Any) -> Any: ...

    def generate(self, request: Any = None, /, **fields: Any) -> Any: ...

    def embed(self, request: Any = None, /, **fields: Any) -> EmbedResponse: ...


_lock = threading.Lock()
_injected: Backend | None = None  # a manager given by the caller (tests, embedding apps)
_client: Backend | None = None  # set by connect(url)


def current() -> Backend:
    """The connected server if any, else the injected manager, else the kernel's own manager."""
    with _lock:
        chosen = _client or _injected
    if chosen is not None:
        return chosen
    from ..manager.default import default_manager

    return default_manager()


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
    backend = backend or current()
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
    the stream early; the result then has ``interrupted=True`` and the partial text. The stream
    is closed in every case, which tells the model's worker to stop before its next token.
    """
    started = time.perf_counter_ns() if started_ns is None else started_ns
    parts: list[str] = []
    final: Any = None
    ttft: int | None = None
    interrupted = False
    throttle = Throttle((lambda: on_text("".join(parts))) if on_text else (lambda: None), interval)
    try:
        for chunk in chunks:
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
    )
    return result


def _timings_of(final: Any, ttft: int | None) -> Timings:
    """The reply's own timings when it was made in this process (the manager measured its time
    to first token from the request's arrival); for a remote reply, its Ollama fields with the
    time to first token measured here, on the caller's side."""
    timings = final.timings if isinstance(final, TimedReply) else Timings.from_ollama(final)
    return timings if timings.ttft_duration is not None else replace(timings, ttft_duration=ttft)


__all__ = ["Backend", "chunk_text", "connect", "connected_url", "current", "describe", "read_reply", "use"]
