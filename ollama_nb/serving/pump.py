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
time between two decode steps. So while a stream's events come less than COALESCE_S apart, the
loop leaves it to a :class:`Collector` (one per loop, for all its streams, so that eight fast
streams still cost one wake-up per interval), and the worker only queues their events: it hands
one over in about 20 us, and the loop's work runs while the worker is inside llama.cpp (which has
let go of the GIL). The first event and the last always wake the loop at once (the first
token's time and the end of a reply are not delayed), and a stream whose events come further
apart (a bigger model, or a batch of many sequences whose every step takes longer) is woken
event by event as before, with no timer firing for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
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


class Collector:
    """The one timer of an event loop that collects the events its fast streams queued without
    waking it: every COALESCE_S while any stream is left to it."""

    def __init__(self) -> None:
        self._pumps: set[ChunkPump] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, pump: ChunkPump) -> None:
        """Look at ``pump`` at the next tick (loop thread). Its flag is set before its worker can
        read it, and cleared by the tick before the tick looks: an event queued while the flag
        was up is seen by the tick, one queued after it went down wakes the loop itself."""
        pump._collected = True
        self._pumps.add(pump)
        if self._timer is None:
            self._timer = pump._loop.call_later(COALESCE_S, self._tick)

    def _tick(self) -> None:
        self._timer = None
        pumps, self._pumps = self._pumps, set()
        for pump in pumps:
            pump._collected = False
            if pump._ready:
                pump._wake()  # may watch it again: the next tick is set then


_collectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Collector] = weakref.WeakKeyDictionary()


def collector(loop: asyncio.AbstractEventLoop) -> Collector:
    found = _collectors.get(loop)
    if found is None:
        found = _collectors[loop] = Collector()
    return found


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
        self._last_event = -COALESCE_S  # when the producer handed over its last event (its clock)
        self._fast = False  # that event came less than COALESCE_S after the one before
        self._collected = False  # the loop's collector looks at this pump at its next tick
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
        if may_wait and self._collected:
            return  # the collector's next tick finds it (see Collector.watch)
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
        now = time.monotonic()
        self._fast = now - self._last_event < COALESCE_S
        self._last_event = now
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
        if self._fast and not self._collected and not self._finished:
            collector(self._loop).watch(self)  # before any later event can look at the flag
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
