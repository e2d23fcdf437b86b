"""A rate limit for UI updates while tokens stream in.

Every update of a display handle or a widget trait resends the *whole* text to the browser, so
one update per token costs quadratic bytes and floods the kernel's IOPub channel. Magics and
widgets therefore buffer tokens and flush through a :class:`Throttle`: the first change shows at
once (the reply visibly starts), later ones at most once per ``interval`` seconds, and
:meth:`Throttle.close` flushes whatever is still pending so the last tokens are never lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_INTERVAL = 0.1  # seconds: at most 10 updates per second


class Throttle:
    """Call ``flush`` at most once per ``interval`` seconds while changes keep coming.

    ``poke()`` says "something changed"; it flushes when the interval since the last flush has
    passed, otherwise it only marks the change as pending. Thread-safe, so a generating thread
    may poke while the kernel thread closes.
    """

    def __init__(
        self,
        flush: Callable[[], None],
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush = flush
        self.interval = max(0.0, float(interval))
        self._clock = clock
        self._last: float | None = None
        self._pending = False
        self._lock = threading.Lock()
        self.flushes = 0

    def poke(self) -> bool:
        """Record a change; flush now if allowed. Returns whether it flushed."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self.interval:
                self._pending = True
                return False
            self._last = now
            self._pending = False
            self.flushes += 1
        self._flush()
        return True

    @property
    def pending(self) -> bool:
        return self._pending

    def close(self) -> None:
        """Flush the changes that arrived since the last flush, if any."""
        with self._lock:
            if not self._pending:
                return
            self._pending = False
            self._last = self._clock()
            self.flushes += 1
        self._flush()


__all__ = ["DEFAULT_INTERVAL", "Throttle"]
