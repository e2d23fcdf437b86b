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

A source that can push (:class:`PushSource`: the manager's generations) skips the executor
thread per token: the thread only starts it (loading the model may block), then the model's
worker hands every event straight to the loop, which shapes it into chunks. Ending it (which may
block while the worker lets go) runs on the executor again.

A fast push stream is also woken at most once per :data:`COALESCE_S`. Waking the loop is a write
to its self-pipe, a system call that lets go of the GIL; the loop, woken by that very byte,
takes the GIL first and keeps it while it shapes, encodes and writes the chunk, so the worker
waited for all of that before it could sample the next token: measured on two cores with
SmolLM2, handing a token over cost the worker 320-400 us of its 10 ms, the largest share of the
time between two decode steps. Now an event that comes within COALESCE_S of the last wake-up
is only queued, and a timer the loop set when it woke collects it: the worker hands over in
about 20 us, and the loop's work runs while the worker is inside llama.cpp (which has let go of
the GIL). The first event and the last always wake the loop at once (the first token's time
and the end of a reply are not delayed), and a slow stream, a token every COALESCE_S or more,
is still woken token by token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("ollama_nb.pump")

_ITEM, _EVENT, _ERROR, _END = "item", "event", "error", "end"
_ORPHANED = object()  # a push source finished by its own thread after the loop went away
#: The longest a push source's event waits for the loop: 40 wake-ups a second at most, as smooth
#: as text on a screen needs, and 2-3 tokens a write for a model making 100 tokens/s.
COALESCE_S = 0.025
_MARGIN_S = 0.001  # an event queued this close to the collector's time wakes the loop itself


@runtime_checkable
class PushSource(Protocol):
    """A stream whose producer calls a sink from its own thread instead of being iterated."""

    def start(self, sink: Callable[[Any], None]) -> None:
        """Begin (may block); ``sink`` then gets every event, from any thread."""

    def shape(self, event: Any) -> list[Any]:
        """The chunks an event becomes (called on the loop, in order); may raise."""

    def is_last(self, event: Any) -> bool:
        """Whether nothing comes after this event."""

    def cancel(self) -> None:
        """Ask the producer to stop soon (never blocks)."""

    def finish(self) -> None:
        """Stop and release everything (may block; idempotent, thread-safe)."""


class ChunkPump:
    """Drive a blocking chunk iterator on an executor thread; consume it with ``async for``
    (one chunk at a time) or ``async for batch in pump.batches()`` (every ready chunk at once).

    ``factory`` runs on the thread too (building the iterator may read manifests or wait for a
    model to load). Errors come out of the consumer's iteration; :meth:`aclose` asks the thread
    to stop and close the iterator, without waiting for it, so a consumer never hangs on a busy
    model.
    """

    def __init__(
        self, factory: Callable[[], Iterator[Any] | PushSource], *, executor: Executor | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready: deque[tuple[str, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_pending = False
        self._last_wake = -COALESCE_S  # loop time of the last wake-up (time.monotonic)
        self._collector: asyncio.TimerHandle | None = None  # collects the events queued since
        self._stop = threading.Event()
        self._finished = False
        self._closed = False
        self._held: deque[Any] = deque()  # a batch handed out one chunk at a time by __anext__
        self._executor = executor
        self._source: PushSource | None = None
        self._source_started = False
        self._source_finished: asyncio.Future[None] | object | None = None  # _ORPHANED: finished off-loop
        self._thread_done = self._loop.run_in_executor(executor, self._pump, factory)

    # -- the pumping thread ----------------------------------------------------------------------

    def _hand_over(self, kind: str, value: Any, *, may_wait: bool = False) -> None:
        self._ready.append((kind, value))
        if self._wake_pending:
            return  # the wake-up already on its way will find this chunk too
        if may_wait and time.monotonic() - self._last_wake < COALESCE_S - _MARGIN_S:
            return  # the collector the last wake-up set will find it (see _wake)
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is gone (server stopped): nobody is listening any more
            self._stop.set()
            if self._source is not None and self._source_finished is None:
                # Nobody is left to finish it, and the producer's own thread must not wait for
                # itself: a short-lived thread releases the model once the producer lets go.
                self._source_finished = _ORPHANED
                self._source.cancel()
                threading.Thread(target=self._source.finish, name="ollama_nb-orphaned-stream", daemon=True).start()

    def _push(self, event: Any) -> None:
        """The sink a push source's producer calls, from its own thread."""
        source = self._source
        self._hand_over(_EVENT, event, may_wait=source is not None and not source.is_last(event))

    def _pump(self, factory: Callable[[], Iterator[Any] | PushSource]) -> None:
        iterator: Iterator[Any] | None = None
        try:
            source = factory()
            if isinstance(source, PushSource):
                self._start(source)
                return
            iterator = source
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
            if iterator is not None or self._source is None:
                self._hand_over(_END, None)

    def _start(self, source: PushSource) -> None:
        """Start a push source (pumping thread); finish it here if the consumer left meanwhile."""
        self._source = source
        if self._stop.is_set():
            return
        source.start(self._push)
        self._source_started = True
        if self._stop.is_set():  # the loop may have looked before the flag was set: finish is idempotent
            source.finish()

    # -- the loop side ---------------------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_pending = False  # first: a chunk appended from now on schedules its own wake-up
        # Then the collector, before any event can decide to wait for it: an event queued
        # within COALESCE_S of this moment is collected when the timer fires, one queued later
        # wakes the loop itself (the timer found nothing, or has not been set again).
        self._last_wake = time.monotonic()
        if self._collector is None and not self._finished:
            self._collector = self._loop.call_later(COALESCE_S, self._collect)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _collect(self) -> None:
        """The collector: wake the consumer for the events queued since the last wake-up."""
        self._collector = None
        if self._ready:
            self._wake()

    def _finish_source(self) -> None:
        """Stop a started push source on the executor (once; its end may block)."""
        self._stop.set()
        if self._source is None or self._source_finished is not None:
            return
        if not self._source_started:
            # Still starting (or its producer outran the flag): the pumping thread finishes it
            # once start returns, so the end of the stream waits for that thread.
            self._source_finished = self._thread_done
            return
        self._source_finished = self._loop.run_in_executor(self._executor, self._source.finish)

    def _take_ready(self) -> list[Any]:
        """The ready chunks up to the stream's end or error, shaping a push source's events."""
        items: list[Any] = []
        while self._ready:
            kind, value = self._ready[0]
            if kind == _ITEM:
                items.append(self._ready.popleft()[1])
            elif kind == _EVENT:
                self._ready.popleft()
                assert self._source is not None
                try:
                    items.extend(self._source.shape(value))
                except BaseException as exc:  # noqa: BLE001 - raised to the consumer after these chunks
                    self._ready.appendleft((_ERROR, exc))
                    self._finish_source()
                    break
                if self._source.is_last(value):
                    self._ready.appendleft((_END, None))
                    self._finish_source()
                    break
            else:
                break
        return items

    async def _next_batch(self) -> list[Any]:
        """Every chunk that is ready (at least one); the stream's end or error once none is left."""
        if self._closed:
            raise StopAsyncIteration
        while True:
            items = self._take_ready()
            if items:
                return items
            if self._ready:
                break  # the end or an error is next
            if self._finished:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            await self._waiter
        kind, value = self._ready.popleft()
        self._finished = True
        self._ready.clear()
        if isinstance(self._source_finished, asyncio.Future):
            # The stream ends once its model is released, as an iterator's does, so a client
            # that asks ``ps`` right after its reply sees keep_alive applied.
            await asyncio.shield(self._source_finished)
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
        self._finish_source()

    async def aclose(self) -> None:
        """Stop after the chunk in flight; the pumping thread closes the iterator by itself."""
        self._stop.set()
        self._closed = self._finished = True
        self._ready.clear()
        self._held.clear()
        self._finish_source()

    async def wait_closed(self) -> None:
        """Wait until the thread has closed the iterator (tests and orderly shutdown)."""
        await asyncio.shield(self._thread_done)
        if isinstance(self._source_finished, asyncio.Future):
            await asyncio.shield(self._source_finished)
