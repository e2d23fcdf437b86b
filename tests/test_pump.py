"""ChunkPump: blocking iterators consumed from asyncio, chunk by chunk or in ready bursts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

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
