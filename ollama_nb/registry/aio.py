"""One background asyncio loop for every download in the process, and the bridge from it to
the synchronous progress iterators the rest of ollama_nb consumes.

Why one shared loop in a daemon thread: the CLI, the magics and the widgets iterate pulls
synchronously, the kernel's own loop must never block, and two pulls of the same model must
find each other's blob downloads (a download is an ``asyncio.Task`` and can only be shared
with code on the same loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, TypeVar

from ..api.types import ProgressResponse

T = TypeVar("T")
Emit = Callable[[ProgressResponse], None]

_LOCK = threading.Lock()
_LOOP: asyncio.AbstractEventLoop | None = None
_DONE = object()


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared download loop, started on first use in a daemon thread."""
    global _LOOP
    with _LOCK:
        if _LOOP is None or _LOOP.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="ollama_nb-downloads", daemon=True).start()
            ready.wait()
            _LOOP = loop
        return _LOOP


def run_with_progress(
    make: Callable[[Emit], Awaitable[T]],
) -> Generator[ProgressResponse, None, T]:
    """Run ``make(emit)`` on the background loop and yield what it emits, in order.

    The coroutine's return value becomes the generator's (``x = yield from ...``) and its
    exception is raised here. Closing the generator early (the client went away, Ctrl-C)
    cancels the coroutine and waits for it to wind down, so part state is on disk before the
    caller goes on.
    """
    events: queue.Queue[Any] = queue.Queue()

    async def runner() -> T:
        return await make(events.put)

    future = asyncio.run_coroutine_threadsafe(runner(), background_loop())
    future.add_done_callback(lambda _f: events.put(_DONE))
    try:
        while True:
            try:
                item = events.get(timeout=0.25)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if item is _DONE:
                break
            yield item
        return future.result()
    finally:
        if not future.done():
            future.cancel()
            # Wait for the cancellation to wind down (part states written); its outcome is moot.
            concurrent.futures.wait([future], timeout=30)


def run_sync(coro: Awaitable[T]) -> T:
    """Run one coroutine on the background loop from a synchronous caller."""
    async def wrap() -> T:
        return await coro

    return asyncio.run_coroutine_threadsafe(wrap(), background_loop()).result()


async def iterate_in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """An async face for a blocking iterator (a pull): it runs in a worker thread and its items
    arrive on the caller's loop, which never blocks. Leaving the ``async for`` early closes the
    iterator in its thread (which cancels the pull's downloads)."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def work() -> None:
        it = make()
        try:
            for item in it:
                loop.call_soon_threadsafe(items.put_nowait, (True, item))
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            loop.call_soon_threadsafe(items.put_nowait, (False, exc))
            return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        loop.call_soon_threadsafe(items.put_nowait, (False, None))

    worker = loop.run_in_executor(None, work)
    try:
        while True:
            ok, value = await items.get()
            if ok:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        await asyncio.shield(worker)
