"""A model's worker: one thread at a time runs its tasks in order, and exists only while there is
work, or for a few seconds after it while no other model works.

A llama.cpp context must never be used by two threads at once, so every loaded model has one
worker. Why the thread goes away when idle: llama.cpp's CPU backend parallelises through OpenMP,
and libgomp keeps a pool of helper threads for every thread that ever ran a parallel region. It
counts the helpers of all pools, and once there are more than CPU cores it stops spinning at its
barriers and sleeps instead, which halves decoding speed. With a resident thread per loaded
model, one idle model in memory was enough to make another generate at half speed
(124 -> 68 tokens/s on two cores). A thread that exits takes its pool with it, so only models
that are actually decoding hold helper threads.

Why it lingers first: a new thread means a new pool, and a first decode in a cold pool is slow
(a cached prompt's first token took 13 to 60 ms instead of 13 on two cores). Requests come in
runs (a client's loop, a chat's next turn, a notebook's cells), so the thread waits ``linger``
seconds for the next task; the moment another model's worker gets work, every lingering thread
leaves (and one whose task ends after that does not linger), so a pool never outlives its use
by more than that.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")

#: Seconds an idle worker thread waits for its next task before it exits.
LINGER_S = 5.0


class Worker:
    """Run submitted callables in submission order on a thread started on demand."""

    _lingering: ClassVar[set[Worker]] = set()  # workers whose thread waits idle for a task
    _lingering_lock: ClassVar[threading.Lock] = threading.Lock()
    _submitted: ClassVar[int] = 0  # tasks given to any worker so far (under _lingering_lock)

    def __init__(self, name: str, linger: float = LINGER_S) -> None:
        self.name = name
        self.linger = linger
        self._tasks: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_submitted = 0  # the count of tasks given to any worker at this one's last

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        mark = self._dismiss_others()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"worker {self.name} is shut down")
            self._last_submitted = max(self._last_submitted, mark)
            self._tasks.append((future, fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name)
                self._thread.start()
            else:
                self._wake.notify()
        return future

    def _dismiss_others(self) -> int:
        """Every other lingering thread leaves now: its OpenMP pool would slow this model down.
        Returns this task's number among all workers' tasks; a thread that is only about to
        linger (its task just done) sees it too (``_overtaken``) and does not."""
        with Worker._lingering_lock:
            Worker._submitted += 1
            mark = Worker._submitted
            others = [w for w in Worker._lingering if w is not self]
        for other in others:  # never two workers' locks at once
            with other._lock:
                other._wake.notify()
        return mark

    def _overtaken(self) -> bool:
        """Whether another worker got a task since this one's last came: lingering would slow it."""
        return Worker._submitted > self._last_submitted

    def _idle_wait(self) -> None:
        """Wait (lock held) for a task, until ``linger`` passes or another worker gets one."""
        if self.linger <= 0 or self._closed:
            return
        with Worker._lingering_lock:
            if self._overtaken():
                return
            Worker._lingering.add(self)
        try:
            self._wake.wait_for(lambda: self._tasks or self._closed or self._overtaken(), timeout=self.linger)
        finally:
            with Worker._lingering_lock:
                Worker._lingering.discard(self)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._tasks:
                    self._idle_wait()
                if not self._tasks:
                    self._thread = None  # decided under the lock: a new task starts a new thread
                    return
                future, fn, args = self._tasks.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Refuse new tasks and wait for the queued ones to finish (never from the worker itself)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
