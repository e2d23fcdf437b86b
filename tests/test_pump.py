"""ChunkPump: blocking iterators consumed from asyncio, chunk by chunk or in ready bursts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ollama_nb.serving import pump as pump_module
from ollama_nb.serving.pump import ChunkPump


class Source:
    """A blocking iterator that yields when told to and records whether it was closed."""

    def __init__(self) -> None:
        self.release = threading.Semaphore(0)
        self.closed = threading.Event()
        self.produced = 0

    def chunks(self, n: int, fail: bool = False) -> Iterator[int]:
        try:
            for i in range(n):
                self.release.acquire()
                self.produced += 1
                yield i
            if fail:
                raise ValueError("model went away")
        finally:
            self.closed.set()


def test_one_chunk_at_a_time_in_order() -> None:
    async def go() -> list[int]:
        src = Source()
        for _ in range(5):
            src.release.release()
        return [c async for c in ChunkPump(lambda: src.chunks(5))]

    assert asyncio.run(go()) == [0, 1, 2, 3, 4]


def test_chunks_that_arrive_while_the_loop_is_busy_come_as_one_batch() -> None:
    async def go() -> list[list[int]]:
        src = Source()
        pump = ChunkPump(lambda: src.chunks(6))
        src.release.release()
        batches = []
        async for batch in pump.batches():
            batches.append(batch)
            if len(batches) == 1:
                for _ in range(5):
                    src.release.release()
                time.sleep(0.3)  # noqa: ASYNC251 - the loop is busy while five more chunks arrive
        return batches

    batches = asyncio.run(go())
    assert [c for b in batches for c in b] == [0, 1, 2, 3, 4, 5]
    assert batches[0] == [0]
    assert batches[1] == [1, 2, 3, 4, 5]  # one wake-up, one write for the burst


def test_an_error_comes_after_the_chunks_before_it() -> None:
    async def go() -> list[int]:
        src = Source()
        for _ in range(3):
            src.release.release()
        seen = []
        with pytest.raises(ValueError, match="model went away"):
            async for c in ChunkPump(lambda: src.chunks(3, fail=True)):
                seen.append(c)
        return seen

    assert asyncio.run(go()) == [0, 1, 2]


def test_closing_early_closes_the_iterator_after_at_most_one_more_chunk() -> None:
    async def go() -> Source:
        src = Source()
        pump = ChunkPump(lambda: src.chunks(1000))
        src.release.release()
        assert await pump.__anext__() == 0
        await pump.aclose()
        src.release.release()  # the chunk in flight
        await asyncio.wait_for(pump.wait_closed(), 5)
        with pytest.raises(StopAsyncIteration):
            await pump.__anext__()
        return src

    src = asyncio.run(go())
    assert src.closed.is_set()
    assert src.produced <= 2


def test_interrupt_ends_the_consumer_and_the_thread() -> None:
    async def go() -> Source:
        src = Source()
        pump = ChunkPump(lambda: src.chunks(1000))
        src.release.release()
        assert await pump.__anext__() == 0
        pump.interrupt(RuntimeError("server is shutting down"))
        with pytest.raises(RuntimeError, match="shutting down"):
            await pump.__anext__()
        src.release.release()
        await asyncio.wait_for(pump.wait_closed(), 5)
        return src

    assert asyncio.run(go()).closed.is_set()


# ---- push sources: the producer's thread hands events straight to the loop ---------------------


class Pushing:
    """A push source whose producer thread emits ``n`` events (the last one marks the end), each
    when told to; records which thread shaped each event and how often it was finished."""

    def __init__(self, n: int, *, fail_at: int | None = None, start_error: Exception | None = None,
                 eager: bool = False) -> None:
        self.n = n
        self.eager = eager  # start returns only after the producer has pushed everything
        self.fail_at = fail_at
        self.start_error = start_error
        self.release = threading.Semaphore(0)
        self.cancelled = threading.Event()
        self.finished = 0
        self.finish_lock = threading.Lock()
        self.shaped_on: set[int] = set()
        self.producer: threading.Thread | None = None
        self.started = threading.Event()
        self.may_start = threading.Event()
        self.may_start.set()

    def start(self, sink: Callable[[Any], None]) -> None:
        self.may_start.wait()
        if self.start_error is not None:
            raise self.start_error

        def produce() -> None:
            for i in range(self.n):
                self.release.acquire()
                if self.cancelled.is_set():
                    return
                sink(ValueError("engine failed") if i == self.fail_at else ("last" if i == self.n - 1 else i))

        self.producer = threading.Thread(target=produce)
        self.producer.start()
        if self.eager:
            self.producer.join()
        self.started.set()

    def shape(self, event: Any) -> list[Any]:
        self.shaped_on.add(threading.get_ident())
        if isinstance(event, BaseException):
            raise event
        return [] if event == 1 else [event]  # event 1 is held back, as a tool call may be

    def is_last(self, event: Any) -> bool:
        return event == "last" or isinstance(event, BaseException)

    def cancel(self) -> None:
        self.cancelled.set()

    def finish(self) -> None:
        self.cancel()
        with self.finish_lock:
            self.finished += 1
        for _ in range(self.n):
            self.release.release()  # let the producer see the cancel


@pytest.mark.parametrize("eager", [False, True], ids=["streaming", "done-before-start-returns"])
def test_a_push_source_is_shaped_on_the_loop_and_finished_once_before_the_end(eager: bool) -> None:
    src = Pushing(4, eager=eager)

    async def go() -> tuple[list, int, bool]:
        for _ in range(4):
            src.release.release()
        loop_thread = threading.get_ident()
        pump = ChunkPump(lambda: src)
        chunks = [c async for c in pump]
        finished_at_end = src.finished  # the model is released before the stream ends
        await pump.wait_closed()
        return chunks, finished_at_end, src.shaped_on == {loop_thread}

    chunks, finished, on_loop = asyncio.run(go())
    assert chunks == [0, 2, "last"]
    assert finished == 1
    assert on_loop


def test_a_push_source_error_comes_after_the_chunks_before_it() -> None:
    src = Pushing(4, fail_at=2)

    async def go() -> list:
        for _ in range(4):
            src.release.release()
        seen = []
        with pytest.raises(ValueError, match="engine failed"):
            async for c in ChunkPump(lambda: src):
                seen.append(c)
        return seen

    assert asyncio.run(go()) == [0]
    assert src.finished == 1


def test_a_push_source_that_fails_to_start_raises_in_the_consumer() -> None:
    src = Pushing(2, start_error=RuntimeError("model failed to load"))

    async def go() -> None:
        async for _ in ChunkPump(lambda: src):
            pass

    with pytest.raises(RuntimeError, match="model failed to load"):
        asyncio.run(go())
    assert src.finished == 0 and not src.started.is_set()


def test_closing_a_push_stream_cancels_and_finishes_its_source() -> None:
    src = Pushing(10)

    async def go() -> list:
        src.release.release()
        pump = ChunkPump(lambda: src)
        first = await pump.__anext__()
        await pump.aclose()
        await pump.wait_closed()
        return [first]

    assert asyncio.run(go()) == [0]
    assert src.cancelled.is_set() and src.finished == 1
    assert src.producer is not None
    src.producer.join(5)
    assert not src.producer.is_alive()


def test_a_consumer_that_leaves_while_the_source_starts_still_finishes_it() -> None:
    src = Pushing(3)
    src.may_start.clear()  # the model is still loading

    async def go() -> None:
        pump = ChunkPump(lambda: src)
        await asyncio.sleep(0.05)
        await pump.aclose()  # the consumer leaves before start returns
        src.may_start.set()
        await pump.wait_closed()

    asyncio.run(go())
    assert src.started.is_set() and src.finished == 1 and src.cancelled.is_set()


def test_interrupting_a_push_stream_ends_it_and_finishes_its_source() -> None:
    src = Pushing(10)

    async def go() -> list:
        src.release.release()
        pump = ChunkPump(lambda: src)
        seen = [await pump.__anext__()]
        pump.interrupt(ConnectionAbortedError("server is shutting down"))
        with pytest.raises(ConnectionAbortedError):
            async for c in pump:
                seen.append(c)
        await pump.wait_closed()
        return seen

    assert asyncio.run(go()) == [0]
    assert src.finished == 1


def test_a_push_stream_whose_loop_is_gone_still_finishes_its_source() -> None:
    src = Pushing(5)

    async def go() -> None:
        ChunkPump(lambda: src)
        assert await asyncio.to_thread(src.started.wait, 5)

    asyncio.run(go())  # the loop closes with the stream unread (a server that stopped)
    src.release.release()  # the producer's next event meets a closed loop
    deadline = time.monotonic() + 5
    while src.finished == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert src.finished == 1 and src.cancelled.is_set()


class Scripted:
    """A push source whose producer thread runs ``script(sink)``: the test decides when each
    event goes out; ``"last"`` ends the stream."""

    def __init__(self, script: Callable[[Callable[[Any], None]], None]) -> None:
        self.script = script
        self.producer: threading.Thread | None = None

    def start(self, sink: Callable[[Any], None]) -> None:
        self.producer = threading.Thread(target=self.script, args=(sink,))
        self.producer.start()

    def shape(self, event: Any) -> list[Any]:
        return [event]

    def is_last(self, event: Any) -> bool:
        return event == "last"

    def cancel(self) -> None:
        pass

    def finish(self) -> None:
        if self.producer is not None:
            self.producer.join(10)


def test_a_fast_push_stream_wakes_the_loop_once_per_interval_not_once_per_event(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first event wakes the loop at once, and so does the first that comes fast after it
    (the loop only then learns the stream is fast); the ones right behind it wait for the
    collector (here: a second away), and the last event wakes the loop again and takes them
    along. Each of them would have woken the loop by itself: it is idle for the 10 ms between."""
    monkeypatch.setattr(pump_module, "COALESCE_S", 1.0)
    first_seen = threading.Event()

    def script(sink: Callable[[Any], None]) -> None:
        sink(0)
        first_seen.wait(5)
        time.sleep(0.1)  # the consumer may have found 0 before its wake-up ran: let that run
        for i in range(1, 9):
            sink(i)
            time.sleep(0.01)
        sink("last")

    async def go() -> list[list[Any]]:
        batches = []
        async for batch in ChunkPump(lambda: Scripted(script)).batches():
            batches.append(batch)
            first_seen.set()
        return batches

    assert asyncio.run(go()) == [[0], [1], [2, 3, 4, 5, 6, 7, 8, "last"]]


def test_events_that_wait_for_the_collector_arrive_without_another_event_behind_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that pauses after a quick burst (a long tool call being held back, a slow token)
    must not keep the burst from the client until its next event."""
    monkeypatch.setattr(pump_module, "COALESCE_S", 0.2)
    received: list[Any] = []
    burst_arrived = threading.Event()
    first_seen = threading.Event()

    def script(sink: Callable[[Any], None]) -> None:
        sink(0)
        first_seen.wait(5)
        sink(1)  # fast after 0: wakes the loop, which leaves the stream to its collector
        time.sleep(0.02)
        sink(2)  # queued for the collector
        burst_arrived.wait(5)  # without the collector, 2 would wait for "last" forever
        sink("last")

    async def go() -> None:
        async for batch in ChunkPump(lambda: Scripted(script)).batches():
            received.extend(batch)
            first_seen.set()
            if 2 in received and "last" not in received:
                burst_arrived.set()

    asyncio.run(go())
    assert received == [0, 1, 2, "last"]
    assert burst_arrived.is_set()


def test_a_slow_push_stream_is_woken_event_by_event_with_no_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events further apart than the interval (a big model; many sequences in one batch) each
    wake the loop, and no timer is set to fire for nothing between them."""
    monkeypatch.setattr(pump_module, "COALESCE_S", 0.02)
    watched: list[Any] = []
    monkeypatch.setattr(pump_module.Collector, "watch", lambda self, pump: watched.append(pump))

    def script(sink: Callable[[Any], None]) -> None:
        for i in range(4):
            sink(i)
            time.sleep(0.08)
        sink("last")

    async def go() -> list[list[Any]]:
        return [batch async for batch in ChunkPump(lambda: Scripted(script)).batches()]

    assert asyncio.run(go()) == [[0], [1], [2], [3], ["last"]]
    assert watched == []
