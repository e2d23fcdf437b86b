"""Consume the manager's blocking chunk iterators from asyncio, one token at a time or in bursts.

The manager streams through sync iterators whose ``next()`` blocks on a model's worker thread,
and closing such an iterator is what cancels generation. An event loop must never block, so a
:class:`ChunkPump` runs the iterator on an executor thread and hands chunks over. When the
consumer gives up (client gone, handler cancelled, server stopping) the thread closes the
iterator as soon as it regains control, i.e. after at most one more token.

Every chunk crossing threads costs a loop wake-up, and on a small machine that CPU comes out of
llama.cpp's own threads. So the hand-over is a plain deque plus at most one pending wake-up:
chunks that arrive while the loop is still busy with the previous ones ride along with it, and
:meth:`ChunkPump.batches` gives the consumer everything that is ready in one go (one socket
write instead of several).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

log = logging.getLogger("ollama_nb.pump")

_ITEM, _ERROR, _END = "item", "error", "end"


class ChunkPump:
    """Drive a blocking chunk iterator on an executor thread; consume it with ``async for``
    (one chunk at a time) or ``async for batch in pump.batches()`` (every ready chunk at once).

    ``factory`` runs on the thread too (building the iterator may read manifests or wait for a
    model to load). Errors come out of the consumer's iteration; :meth:`aclose` asks the thread
    to stop and close the iterator, without waiting for it, so a consumer never hangs on a busy
    model.
    """

    def __init__(
        self, factory: Callable[[], Iterator[Any]], *, executor: Executor | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready: deque[tuple[str, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_pending = False
        self._stop = threading.Event()
        self._finished = False
        self._closed = False
        self._held: deque[Any] = deque()  # a batch handed out one chunk at a time by __anext__
        self._thread_done = self._loop.run_in_executor(executor, self._pump, factory)

    # -- the pumping thread ----------------------------------------------------------------------

    def _hand_over(self, kind: str, value: Any) -> None:
        self._ready.append((kind, value))
        if self._wake_pending:
            return  # the wake-up already on its way will find this chunk too
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is gone (server stopped): nobody is listening any more
            self._stop.set()

    def _pump(self, factory: Callable[[], Iterator[Any]]) -> None:
        iterator: Iterator[Any] | None = None
        try:
            iterator = factory()
            if not self._stop.is_set():
                for item in iterator:
                    self._hand_over(_ITEM, item)
                    if self._stop.is_set():
                        break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._hand_over(_ERROR, exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # the manager's iterators cancel generation here
                except Exception:
                    log.exception("closing a chunk iterator failed")
            self._hand_over(_END, None)

    # -- the loop side ---------------------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_pending = False  # first: a chunk appended from now on schedules its own wake-up
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next_batch(self) -> list[Any]:
        """Every chunk that is ready (at least one); the stream's end or error once none is left."""
        if self._closed:
            raise StopAsyncIteration
        while not self._ready:
            if self._finished:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            await self._waiter
        items: list[Any] = []
        while self._ready and self._ready[0][0] == _ITEM:
            items.append(self._ready.popleft()[1])
        if items:
            return items
        kind, value = self._ready.popleft()
        self._finished = True
        self._ready.clear()
        if kind == _ERROR:
            raise value
        raise StopAsyncIteration

    async def batches(self) -> AsyncIterator[list[Any]]:
        """Iterate over bursts of ready chunks; each list holds at least one."""
        while True:
            if self._held:
                held = list(self._held)
                self._held.clear()
                yield held
                continue
            try:
                batch = await self._next_batch()
            except StopAsyncIteration:
                return
            yield batch

    def __aiter__(self) -> ChunkPump:
        return self

    async def __anext__(self) -> Any:
        if not self._held:
            self._held.extend(await self._next_batch())
        return self._held.popleft()

    def interrupt(self, exc: BaseException) -> None:
        """End the consumer's iteration with ``exc`` once the ready chunks are out (loop thread
        only); the pumping thread stops too."""
        self._stop.set()
        self._ready.append((_ERROR, exc))
        self._wake()

    async def aclose(self) -> None:
        """Stop after the chunk in flight; the pumping thread closes the iterator by itself."""
        self._stop.set()
        self._closed = self._finished = True
        self._ready.clear()
        self._held.clear()

    async def wait_closed(self) -> None:
        """Wait until the thread has closed the iterator (tests and orderly shutdown)."""
        await asyncio.shield(self._thread_done)
