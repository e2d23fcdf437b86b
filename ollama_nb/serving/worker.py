"""A model's worker: one thread at a time runs its tasks in order, and exists only while there is
work.

A llama.cpp context must never be used by two threads at once, so every loaded model has one
worker. Why the thread goes away when idle: llama.cpp's CPU backend parallelises through OpenMP,
and libgomp keeps a pool of helper threads for every thread that ever ran a parallel region. It
counts the helpers of all pools, and once there are more than CPU cores it stops spinning at its
barriers and sleeps instead, which halves decoding speed. With a resident thread per loaded
model, one idle model in memory was enough to make another generate at half speed
(124 -> 68 tokens/s on two cores). A thread that exits takes its pool with it, so only models
that are actually decoding hold helper threads.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class Worker:
    """Run submitted callables in submission order on a thread started on demand."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"worker {self.name} is shut down")
            self._tasks.append((future, fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name)
                self._thread.start()
        return future

    def _run(self) -> None:
        while True:
            with self._lock:
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
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
