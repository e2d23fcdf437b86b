"""Several backends behind one face: the kernel's own models, plus named remote ones.

A :class:`Router` is itself a backend, with the manager's method names, so every face (magics,
widgets, ``ollama_nb.chat``, ``compare()``, the kernel's HTTP server) works on several backends
without knowing it. A model name says where it runs: ``gpu/llama3.1:70b`` is ``llama3.1:70b`` on
the backend named ``gpu``; a name whose first part is not a registered backend
(``smollm2:135m``, ``library/x``, ``hf.co/...``) is the kernel's own. Listings name remote
models the same way, so a name read off ``%ollama list`` can be used as it is.

Remote replies are always streamed from the backend (a non-streamed call is folded here), so the
time to the first token is seen; their timings join the kernel's request records (the dashboard,
``/metrics``) beside local ones, labelled as measured on this side where they were. A backend that
fails is one line naming it; the others keep working.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..api.collect import collect_chat, collect_generate
from ..api.types import ChatRequest, EmbedRequest, GenerateRequest, ListResponse, ProcessResponse
from ..base.errors import InvalidRequest, NotSupported, OllamaNbError
from ..base.timings import Timings
from ..client import Client, unreachable
from ..manager.records import RequestRecord
from .openai_engine import OpenAIEngine
from .settings import LOCAL, BackendSpec

if TYPE_CHECKING:
    from ..api.types import EmbedResponse, InfoResponse, ProgressResponse, ShowResponse
    from .protocol import Backend

__all__ = ["PROBE_TIMEOUT", "BackendHealth", "Entry", "Router", "make_backend"]

log = logging.getLogger("ollama_nb.backends")


def make_backend(spec: BackendSpec, *, timeout: float | None = None) -> Any:
    """The client for a spec: an Ollama :class:`~ollama_nb.client.Client` or an :class:`OpenAIEngine`."""
    if spec.kind == "openai":
        return OpenAIEngine(spec, timeout=timeout)
    return Client(spec.url, timeout=timeout, backend=spec.name, api_key_env=spec.api_key_env)


#: Seconds a listing or a health check waits for a backend: a host that does not answer must not
#: hang ``%ollama list`` or the chat panel (a reply itself may take as long as the model needs).
PROBE_TIMEOUT = 10.0


@dataclass
class Entry:
    spec: BackendSpec
    backend: Any  # for replies: waits as long as the model takes, unless a timeout was given
    probe: Any  # for listings and health checks: gives up after PROBE_TIMEOUT


@dataclass(frozen=True)
class BackendHealth:
    """One row of ``%ollama backends``."""

    name: str
    kind: str
    url: str
    ok: bool
    models: int | None
    latency_ms: float | None
    status: str
    api_key_env: str | None = None


@dataclass
class _Shared:
    """The registered backends, shared by a router and every view of it (:meth:`Router.bound`)."""

    entries: dict[str, Entry] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    observers: list[Callable[[RequestRecord], None]] = field(default_factory=list)


class Router:
    """The kernel's models (``local``: a manager, or a callable returning the current one) and
    the named backends registered with :meth:`register`."""

    def __init__(self, local: Any, *, _shared: _Shared | None = None) -> None:
        self._local = local
        self._shared = _shared or _Shared()
        #: The last failure of each backend a listing skipped (name -> one line).
        self.problems: dict[str, str] = {}

    # ---- registry -----------------------------------------------------------------------------

    def local(self) -> Backend:
        return self._local() if callable(self._local) and not hasattr(self._local, "chat") else self._local

    def bound(self, local: Any) -> Router:
        """The same named backends over another local one (a magics object's injected manager)."""
        return Router(local, _shared=self._shared)

    def register(self, spec: BackendSpec, *, timeout: float | None = None) -> Entry:
        """Add (or replace) the backend ``spec.name``."""
        entry = Entry(spec, make_backend(spec, timeout=timeout),
                      make_backend(spec, timeout=min(timeout or PROBE_TIMEOUT, PROBE_TIMEOUT)))
        with self._shared.lock:
            self._shared.entries[spec.name] = entry
        return entry

    def remove(self, name: str) -> bool:
        with self._shared.lock:
            return self._shared.entries.pop(name, None) is not None

    def entries(self) -> list[Entry]:
        with self._shared.lock:
            return list(self._shared.entries.values())

    def names(self) -> list[str]:
        return [e.spec.name for e in self.entries()]

    def entry(self, name: str) -> Entry:
        with self._shared.lock:
            found = self._shared.entries.get(name)
        if found is None:
            known = ", ".join([LOCAL, *self.names()])
            raise InvalidRequest(f"no backend named {name!r}", hint=f"backends: {known}")
        return found

    def resolve(self, model: str, backend: str | None = None) -> tuple[str, Any, str]:
        """``(backend name, backend, model name there)`` for a model name. ``backend`` picks one
        explicitly (then ``model`` is that backend's own name for it)."""
        if backend is not None and backend != LOCAL:
            return backend, self.entry(backend).backend, model
        if backend == LOCAL:
            return LOCAL, self.local(), model
        head, sep, rest = (model or "").partition("/")
        if sep and rest:
            with self._shared.lock:
                found = self._shared.entries.get(head)
            if found is not None:
                return head, found.backend, rest
        return LOCAL, self.local(), model

    @staticmethod
    def qualify(backend: str, model: str) -> str:
        return model if backend == LOCAL else f"{backend}/{model}"

    # ---- records ------------------------------------------------------------------------------

    @property
    def observers(self) -> list[Callable[[RequestRecord], None]]:
        """Where remote requests' records go: the local manager's observers (so the kernel's
        dashboard and ``/metrics`` show them beside local ones), else the router's own list."""
        found = getattr(self.local(), "observers", None)
        return found if isinstance(found, list) else self._shared.observers

    def _record(self, endpoint: str, model: str, started_at: float, timings: Timings, done: str | None) -> None:
        record = RequestRecord(endpoint=endpoint, model=model, started_at=started_at, timings=timings,
                               done_reason=done)
        for observer in list(self.observers):
            try:
                observer(record)
            except Exception:  # a broken observer must not fail the reply it observes
                log.exception("request observer failed")

    # ---- catalog ------------------------------------------------------------------------------

    def _each_remote(self, call: Callable[[Any], Any], *, skip_unsupported: bool = False) -> Iterator[tuple[str, Any]]:
        for entry in self.entries():
            name = entry.spec.name
            try:
                yield name, call(entry.probe)
                self.problems.pop(name, None)
            except NotSupported:
                if not skip_unsupported:
                    raise
            except OllamaNbError as exc:
                self.problems[name] = exc.for_humans()

    def list_by_backend(self) -> dict[str, ListResponse | OllamaNbError]:
        """Every backend's own listing (names as that backend spells them), or its error."""
        out: dict[str, ListResponse | OllamaNbError] = {LOCAL: self.local().list()}
        for entry in self.entries():
            try:
                out[entry.spec.name] = entry.probe.list()
            except OllamaNbError as exc:
                out[entry.spec.name] = exc
        return out

    def list(self) -> ListResponse:
        """The kernel's models, then each backend's as ``NAME/model``; a backend that cannot be
        reached is left out (and its line kept in :attr:`problems`)."""
        models = list(self.local().list().models)
        for name, listing in self._each_remote(lambda b: b.list()):
            host = self.entry(name).backend.url
            models += [m.model_copy(update={"name": f"{name}/{m.name}", "model": f"{name}/{m.model}",
                                            "remote_model": m.model, "remote_host": host})
                       for m in listing.models]
        return ListResponse(models=models)

    def ps(self) -> ProcessResponse:
        models = list(self.local().ps().models)
        for name, loaded in self._each_remote(lambda b: b.ps(), skip_unsupported=True):
            models += [m.model_copy(update={"name": f"{name}/{m.name}", "model": f"{name}/{m.model}"})
                       for m in loaded.models]
        return ProcessResponse(models=models)

    def info(self) -> InfoResponse:
        return self.local().info()

    def show(self, name: str, *, verbose: bool = False) -> ShowResponse:
        _, backend, model = self.resolve(name)
        return backend.show(model, verbose=verbose)

    def pull(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        _, backend, model = self.resolve(name)
        return backend.pull(model, insecure=insecure)

    def push(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        _, backend, model = self.resolve(name)
        return backend.push(model, insecure=insecure)

    def create(self, name: str, modelfile: str | None = None, *, base_dir: str | None = None,
               quantize: str | None = None) -> Iterator[ProgressResponse]:
        _, backend, model = self.resolve(name)
        return backend.create(model, modelfile, base_dir=base_dir, quantize=quantize)

    def copy(self, source: str, destination: str) -> None:
        where, backend, src = self.resolve(source)
        there, _, dst = self.resolve(destination)
        if where != there:
            raise InvalidRequest(f"cannot copy from backend {where!r} to backend {there!r}",
                                 hint="a copy stays on one backend")
        backend.copy(src, dst)

    def delete(self, name: str) -> None:
        _, backend, model = self.resolve(name)
        backend.delete(model)

    def unload(self, name: str) -> bool:
        _, backend, model = self.resolve(name)
        return backend.unload(model)

    def health(self) -> list[BackendHealth]:
        """Each backend, the kernel's first: reachable or not, how many models, how long it took."""
        rows = []
        targets = [(LOCAL, "kernel", "this kernel", self.local(), None),
                   *((e.spec.name, e.spec.kind, e.probe.url, e.probe, e.spec.api_key_env) for e in self.entries())]
        if getattr(targets[0][3], "url", None):  # %ollama connect URL made the default a server
            targets[0] = (LOCAL, "ollama", targets[0][3].url, targets[0][3], None)
        for name, kind, url, backend, key_env in targets:
            started = time.perf_counter()
            try:
                count: int | None = len(backend.list().models)
                ok, status = True, "ok"
            except OllamaNbError as exc:
                count, ok, status = None, False, exc.for_humans()
            rows.append(BackendHealth(name, kind, url, ok, count, round((time.perf_counter() - started) * 1e3, 1),
                                      status, key_env))
        return rows

    # ---- inference ----------------------------------------------------------------------------

    def chat(self, request: ChatRequest | None = None, /, **fields: Any) -> Any:
        req = request or ChatRequest(**fields)
        name, backend, model = self.resolve(req.model)
        if name == LOCAL:
            return backend.chat(req)
        chunks = self._relay(name, backend, lambda: backend.chat(req.model_copy(update={"model": model, "stream": True})),
                             req.model, "chat")
        return chunks if req.stream else collect_chat(chunks)

    def generate(self, request: GenerateRequest | None = None, /, **fields: Any) -> Any:
        req = request or GenerateRequest(**fields)
        name, backend, model = self.resolve(req.model)
        if name == LOCAL:
            return backend.generate(req)
        chunks = self._relay(name, backend,
                             lambda: backend.generate(req.model_copy(update={"model": model, "stream": True})),
                             req.model, "generate")
        return chunks if req.stream else collect_generate(chunks)

    def embed(self, request: EmbedRequest | None = None, /, **fields: Any) -> EmbedResponse:
        req = request or EmbedRequest(**fields)
        name, backend, model = self.resolve(req.model)
        if name == LOCAL:
            return backend.embed(req)
        started_at = time.time()
        reply = backend.embed(req.model_copy(update={"model": model}))
        timings = reply.timings
        if not timings.client_side:  # a remote Ollama: its own total, nothing measured here
            timings = replace(timings, absent=("queue_duration",))
        out = reply.model_copy(update={"model": req.model})
        out._timings = timings
        self._record("embed", req.model, started_at, timings, None)
        return out

    def _relay(self, name: str, backend: Any, open_stream: Callable[[], Iterator[Any]], model: str,
               endpoint: str) -> Iterator[Any]:
        """Open the remote stream now (a bad model or an unreachable backend fails at the call),
        then relay its chunks under the qualified model name."""
        started_at, started = time.time(), time.perf_counter_ns()
        chunks = open_stream()
        return self._relayed(name, backend, chunks, model, endpoint, started_at, started)

    def _relayed(self, name: str, backend: Any, chunks: Iterator[Any], model: str, endpoint: str,
                 started_at: float, started: int) -> Iterator[Any]:
        first: int | None = None
        where = {"model": model, "remote_model": model.partition("/")[2], "remote_host": getattr(backend, "url", None)}
        try:
            for chunk in chunks:
                if first is None and _has_output(chunk):
                    first = time.perf_counter_ns()
                out = chunk.model_copy(update=where)
                if chunk.done:
                    timings = _remote_timings(chunk, started, first)
                    out._timings = timings
                    self._record(endpoint, model, started_at, timings, chunk.done_reason)
                    yield out
                    return
                yield out
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        raise unreachable(name, getattr(backend, "url", "?"), "the reply ended before it was done")

    # ---- the async faces the HTTP server uses (so it can route) --------------------------------

    async def achat(self, request: ChatRequest | None = None, /, **fields: Any) -> Any:
        req = request or ChatRequest(**fields)
        if self.resolve(req.model)[0] == LOCAL:
            return await self.local().achat(req)
        return await self._async(req, self.chat)

    async def agenerate(self, request: GenerateRequest | None = None, /, **fields: Any) -> Any:
        req = request or GenerateRequest(**fields)
        if self.resolve(req.model)[0] == LOCAL:
            return await self.local().agenerate(req)
        return await self._async(req, self.generate)

    async def aembed(self, request: EmbedRequest | None = None, /, **fields: Any) -> EmbedResponse:
        return await asyncio.to_thread(self.embed, request or EmbedRequest(**fields))

    async def alist(self) -> ListResponse:
        return await asyncio.to_thread(self.list)

    async def ashow(self, name: str, *, verbose: bool = False) -> ShowResponse:
        return await asyncio.to_thread(self.show, name, verbose=verbose)

    async def aps(self) -> ProcessResponse:
        return await asyncio.to_thread(self.ps)

    @staticmethod
    async def _async(req: Any, call: Callable[[Any], Any]) -> Any:
        from ..serving.pump import ChunkPump

        if req.stream:
            return ChunkPump(lambda: call(req))
        return await asyncio.to_thread(call, req)

    def __getattr__(self, name: str) -> Any:
        """Everything else (the store, tokenize, create_model, ...) is the kernel's own."""
        if name.startswith("__") or name in ("_local", "_shared", "problems"):
            raise AttributeError(name)
        return getattr(self.local(), name)


def _has_output(chunk: Any) -> bool:
    message = getattr(chunk, "message", None)
    if message is not None:
        return bool(message.content or message.thinking or message.tool_calls)
    return bool(getattr(chunk, "response", "") or getattr(chunk, "thinking", None))


def _remote_timings(final: Any, started: int, first: int | None) -> Timings:
    """A remote final chunk's timings. An OpenAI engine's already say what was measured here; a
    remote Ollama reports its own durations but no time to the first token (measured here) and
    no queue wait."""
    own = final._timings
    if own is not None and own.client_side:
        return own
    base = Timings.from_ollama(final)
    return replace(base, ttft_duration=None if first is None else first - started,
                   client_side=("ttft_duration",), absent=("queue_duration",))
