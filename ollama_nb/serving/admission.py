"""Admission: how many requests may wait for a model's worker before new ones are refused.

Ollama counts every request between its arrival and the moment a runner takes it, and answers
503 "server busy, please try again. maximum pending requests exceeded" beyond
``OLLAMA_MAX_QUEUE`` (512). A request that is loading its model, or queued behind a full batch,
counts; one that is decoding does not. The count is shared by all models, as in Ollama.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..base import config
from ..base.errors import ServerBusy

__all__ = ["Admission", "Ticket"]


class Admission:
    """The count of waiting requests, and the limit it is checked against on each arrival."""

    def __init__(self, limit: Callable[[], int] = config.max_queue) -> None:
        self._limit = limit
        self._waiting = 0
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """Requests admitted that no worker has taken yet."""
        with self._lock:
            return self._waiting

    def admit(self) -> Ticket:
        """A ticket for one more waiting request; ServerBusy (503) when the queue is full."""
        with self._lock:
            if self._waiting >= self._limit():
                raise ServerBusy()
            self._waiting += 1
        return Ticket(self)

    def _leave(self) -> None:
        with self._lock:
            self._waiting -= 1


class Ticket:
    """One admitted request's place in the count; ``leave`` when a worker takes it (or it fails),
    which also notes how long it waited for the worker."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._waiting = True
        self._lock = threading.Lock()
        self._submitted_ns: int | None = None
        self.queue_duration = 0

    def submitted(self) -> None:
        """The request is in its model's queue now (its model is loaded): the queue wait starts."""
        self._submitted_ns = time.perf_counter_ns()

    def leave(self) -> None:
        """No longer waiting (running, or failed); idempotent, from any thread."""
        with self._lock:
            if not self._waiting:
                return
            self._waiting = False
            if self._submitted_ns is not None:
                self.queue_duration = time.perf_counter_ns() - self._submitted_ns
        self._admission._leave()
