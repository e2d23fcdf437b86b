"""Which models are loaded, for how long, and the one worker thread that drives each.

Ollama's rules: a request names a model and a keep_alive; the model stays loaded until it has
been idle for keep_alive (0 = unload right after the request, negative/inf = forever); a change
of load-time options reloads it; at most ``OLLAMA_MAX_LOADED_MODELS`` are resident, and a new
load evicts the idle model that would expire first. A llama.cpp context must never be used by
two threads, so every runner owns a :class:`~ollama_nb.serving.worker.Worker` and all engine calls go
through it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..base import config
from ..runtime import Engine, GenerationRequest, LoadParams
from .admission import Admission
from .worker import Worker

log = logging.getLogger("ollama_nb.scheduler")
T = TypeVar("T")

FAR_FUTURE = dt.datetime(2318, 1, 1, tzinfo=dt.timezone.utc)  # what Ollama shows for "forever"


@dataclass
class RunnerInfo:
    """What ``ps`` reports about a loaded model."""

    name: str
    digest: str
    size: int
    size_vram: int
    context_length: int
    expires_at: dt.datetime
    details: Any = None
    runtime: LoadParams | None = None  # what the engine really got (after fallbacks)
    threads: int = 0  # the threads it computes with now
    huge_page_bytes: int = 0  # of its buffers, how much sits in 2 MiB pages


@dataclass(eq=False)
class Runner:
    """One loaded model: its engine(s), its worker thread, its keep-alive bookkeeping."""

    key: str
    digest: str
    model_path: str
    params: LoadParams
    details: Any = None
    engine: Engine | None = None
    embed_engine: Engine | None = None
    load_duration_ns: int = 0
    refcount: int = 0
    keep_alive: float = 300.0
    expires_at: dt.datetime = FAR_FUTURE
    size: int = 0
    size_vram: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: BaseException | None = None
    _timer: threading.Timer | None = None
    _worker: Worker | None = None
    _inbox: deque[GenerationRequest] = field(default_factory=deque)
    _inbox_lock: threading.Lock = field(default_factory=threading.Lock)
    _serving: bool = False

    def __post_init__(self) -> None:
        self._worker = Worker(f"ollama_nb:{self.key}")

    def generate(self, request: GenerationRequest) -> None:
        """Queue a generation; the worker's batch loop admits it, in arrival order, as soon as
        one of the engine's ``num_parallel`` sequences is free. ``request.done`` gets the outcome."""
        with self._inbox_lock:
            self._inbox.append(request)
            if self._serving:
                return
            self._serving = True
        self.submit(self._serve)

    def _serve(self) -> None:
        try:
            assert self.engine is not None
            self.engine.serve(self._take)
        except BaseException as exc:
            with self._inbox_lock:
                stranded, self._serving = list(self._inbox), False
                self._inbox.clear()
            for request in stranded:
                request.done(exc)

    def _take(self, n: int, idle: bool) -> list[GenerationRequest] | None:
        """Up to ``n`` waiting requests; ``None`` ends the loop when it is idle and none wait
        (decided under the lock, so a request that arrives now starts a new loop)."""
        with self._inbox_lock:
            if not self._inbox and idle:
                self._serving = False
                return None
            return [self._inbox.popleft() for _ in range(min(n, len(self._inbox)))]

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on this model's worker thread."""
        assert self._worker is not None
        return self._worker.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result()

    def embedding_engine(self) -> Engine:
        """A second context with embeddings on, created on first use (worker thread only)."""
        if self.embed_engine is None:
            from dataclasses import replace

            self.embed_engine = Engine(self.model_path, replace(self.params, embedding=True))
        return self.embed_engine

    def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

        def close() -> None:
            for eng in (self.engine, self.embed_engine):
                if eng is not None:
                    eng.close()

        if self._worker is not None:
            self._worker.submit(close)
            self._worker.shutdown()


class Scheduler:
    """Loads, shares, expires and evicts runners; thread-safe."""

    def __init__(self, engine_factory: Callable[[str, LoadParams], Engine] = Engine) -> None:
        self._engine_factory = engine_factory
        self._cond = threading.Condition()
        self._runners: dict[str, Runner] = {}
        self._load_lock = threading.Lock()  # one model loads at a time, as in Ollama
        self.admission = Admission()  # OLLAMA_MAX_QUEUE, over all models

    # -- acquiring --------------------------------------------------------------------------

    def acquire(
        self,
        key: str,
        *,
        digest: str,
        model_path: str,
        params: LoadParams,
        keep_alive: float,
        details: Any = None,
        size_hint: Callable[[Engine], tuple[int, int]] | None = None,
    ) -> Runner:
        """A ready runner for this model and load options, with one more user counted."""
        while True:
            with self._cond:
                runner = self._runners.get(key)
                if runner is not None and (runner.params != params or runner.digest != digest):
                    while runner.refcount > 0:
                        self._cond.wait()
                    if self._runners.get(key) is runner:
                        self._drop(runner)
                    continue
                if runner is None:
                    self._make_room(exclude=key)
                    runner = Runner(key, digest, model_path, params, details=details)
                    self._runners[key] = runner
                    fresh = True
                else:
                    fresh = False
                runner.refcount += 1
                runner.keep_alive = keep_alive
                self._set_expiry(runner, busy=True)
            if fresh:
                self._load(runner, size_hint)
            runner.ready.wait()
            if runner.load_error is not None:
                with self._cond:
                    runner.refcount -= 1
                raise runner.load_error
            return runner

    def _load(self, runner: Runner, size_hint: Callable[[Engine], tuple[int, int]] | None) -> None:
        try:
            with self._load_lock:
                started = time.perf_counter_ns()
                runner.engine = runner.call(self._engine_factory, runner.model_path, runner.params)
                runner.load_duration_ns = time.perf_counter_ns() - started
            if size_hint is not None:
                runner.size, runner.size_vram = size_hint(runner.engine)
        except BaseException as exc:
            runner.load_error = exc
            with self._cond:
                if self._runners.get(runner.key) is runner:
                    del self._runners[runner.key]
                self._cond.notify_all()
            runner.shutdown()
        finally:
            runner.ready.set()

    def _make_room(self, exclude: str) -> None:
        """Evict idle runners (soonest expiry first) until one more model fits. Lock held."""
        limit = config.max_loaded_models()
        while len(self._runners) >= limit:
            idle = [r for k, r in self._runners.items() if r.refcount == 0 and k != exclude]
            if idle:
                victim = min(idle, key=lambda r: r.expires_at)
                log.debug("evicting %s to load another model", victim.key)
                self._drop(victim)
            else:
                self._cond.wait()

    # -- releasing and expiry ---------------------------------------------------------------

    def release(self, runner: Runner, keep_alive: float | None = None) -> None:
        """One user fewer; start the keep-alive clock when nobody uses the model."""
        with self._cond:
            runner.refcount = max(0, runner.refcount - 1)
            if keep_alive is not None:
                runner.keep_alive = keep_alive
            if runner.refcount == 0:
                if runner.keep_alive <= 0:
                    if self._runners.get(runner.key) is runner:
                        self._drop(runner)
                else:
                    self._set_expiry(runner, busy=False)
            self._cond.notify_all()

    def _set_expiry(self, runner: Runner, *, busy: bool) -> None:
        if runner._timer is not None:
            runner._timer.cancel()
            runner._timer = None
        if math.isinf(runner.keep_alive):
            runner.expires_at = FAR_FUTURE
            return
        runner.expires_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(
            seconds=max(runner.keep_alive, 0)
        )
        if not busy and runner.keep_alive > 0:
            timer = threading.Timer(runner.keep_alive, self._expire, args=(runner,))
            timer.daemon = True
            runner._timer = timer
            timer.start()

    def _expire(self, runner: Runner) -> None:
        with self._cond:
            if runner.refcount == 0 and self._runners.get(runner.key) is runner:
                log.debug("keep_alive expired for %s", runner.key)
                self._drop(runner)
                self._cond.notify_all()

    def _drop(self, runner: Runner) -> None:
        """Forget and close a runner. Lock held; closing waits for its worker to finish."""
        self._runners.pop(runner.key, None)
        runner.shutdown()

    # -- queries and explicit control -------------------------------------------------------

    def get(self, key: str) -> Runner | None:
        with self._cond:
            return self._runners.get(key)

    def unload(self, key: str) -> bool:
        """Unload now if idle, else as soon as the running requests finish."""
        with self._cond:
            runner = self._runners.get(key)
            if runner is None:
                return False
            runner.keep_alive = 0
            if runner.refcount == 0:
                self._drop(runner)
                self._cond.notify_all()
            return True

    def unload_all(self) -> None:
        with self._cond:
            for runner in list(self._runners.values()):
                self._drop(runner)
            self._cond.notify_all()

    def loaded(self) -> list[RunnerInfo]:
        """Loaded models, longest remaining time first (Ollama's ``ps`` order)."""
        with self._cond:
            infos = [
                RunnerInfo(
                    name=r.key,
                    digest=r.digest,
                    size=r.size,
                    size_vram=r.size_vram,
                    context_length=r.params.num_ctx,
                    expires_at=r.expires_at,
                    details=r.details,
                    runtime=r.engine.params if r.engine else None,
                    threads=r.engine.threads if r.engine else 0,
                    huge_page_bytes=getattr(r.engine, "huge_page_bytes", 0),
                )
                for r in self._runners.values()
                if r.ready.is_set() and r.load_error is None
            ]
        return sorted(infos, key=lambda i: i.expires_at, reverse=True)
