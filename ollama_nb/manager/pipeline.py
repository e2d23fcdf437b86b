"""The one inference pipeline: admit a request, get its model loaded, run it on the model's
worker, turn its pieces into chunks, measure it once, and tell the observers.

``/api/generate`` and ``/api/chat`` go through :meth:`Pipeline.generate` with their own
:class:`~ollama_nb.manager.replies.Replies`; ``/api/embed`` through :meth:`Pipeline.call`. The
:class:`~ollama_nb.base.timings.Timings` made here is the one the reply, the request record
and every face after them carry.

Threads: the model's worker generates. A caller that iterates (a notebook cell, a CLI) waits for
each token on its own thread; a server's event loop gets every token from the worker directly
(:class:`Generation`). Leaving early (a client hung up, Stop, a kernel interrupt) cancels the
generation before its next token.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..base.timings import Timings
from ..runtime import Engine, GenerationJob, GenerationRequest, GenerationResult
from ..serving.admission import Ticket
from ..serving.scheduler import Runner, Scheduler
from .records import RequestRecord
from .replies import Replies

log = logging.getLogger("ollama_nb.manager")
T = TypeVar("T")

#: Loads (or finds) the request's model, once it is admitted.
Acquire = Callable[[], Runner]


class RequestClock:
    """What only the manager sees of one request: when it arrived, how long it waited for its
    model and for the worker, when its first token came."""

    def __init__(self, started_ns: int, ticket: Ticket) -> None:
        self.started_at = time.time()
        self.started_ns = started_ns
        self.ticket = ticket
        self.load_duration = 0
        self.ttft_duration: int | None = None

    def loaded(self) -> None:
        self.load_duration = time.perf_counter_ns() - self.started_ns

    def first_token(self) -> None:
        if self.ttft_duration is None:
            self.ttft_duration = time.perf_counter_ns() - self.started_ns

    def timings(self, result: GenerationResult | None = None, *, prompt_eval_count: int = 0) -> Timings:
        """The request's one Timings, made when it ends."""
        return Timings(
            total_duration=time.perf_counter_ns() - self.started_ns,
            load_duration=self.load_duration,
            queue_duration=self.ticket.queue_duration,
            ttft_duration=self.ttft_duration,
            prompt_eval_count=result.prompt_eval_count if result else prompt_eval_count,
            prompt_eval_duration=result.prompt_eval_duration if result else 0,
            eval_count=result.eval_count if result else 0,
            eval_duration=result.eval_duration if result else 0,
        )

    def record(self, endpoint: str, model: str, timings: Timings, done_reason: str | None) -> RequestRecord:
        return RequestRecord(endpoint=endpoint, model=model, started_at=self.started_at, timings=timings,
                             done_reason=done_reason)


class Pipeline:
    """Runs requests on the scheduler's workers and reports each finished one to ``notify``."""

    def __init__(self, scheduler: Scheduler, notify: Callable[[RequestRecord], None]) -> None:
        self.scheduler = scheduler
        self.notify = notify

    def _admit(self, started_ns: int, acquire: Acquire) -> tuple[RequestClock, Runner]:
        """Count the request as waiting, then get its model loaded; a failed load leaves the queue."""
        clock = RequestClock(started_ns, self.scheduler.admission.admit())
        try:
            runner = acquire()
        except BaseException:
            clock.ticket.leave()
            raise
        clock.loaded()
        clock.ticket.submitted()
        return clock, runner

    def generate(
        self,
        model: str,
        started_ns: int,
        acquire: Acquire,
        prepare: Callable[[Engine], GenerationJob],
        replies: Replies,
    ) -> Generation:
        """The chunks of one generation, ``replies`` shaping them; ends with the final chunk."""
        return Generation(self, model, started_ns, acquire, prepare, replies)

    def call(
        self, started_ns: int, acquire: Acquire, work: Callable[[Runner], T]
    ) -> tuple[T, RequestClock]:
        """Run ``work(runner)`` on the model's worker (embeddings); the clock makes its timings."""
        clock, runner = self._admit(started_ns, acquire)

        def on_worker() -> T:
            clock.ticket.leave()
            return work(runner)

        try:
            return runner.call(on_worker), clock
        finally:
            clock.ticket.leave()
            self.scheduler.release(runner)


class Generation(Iterator[Any]):
    """One generation's chunks, reached in either of two ways.

    Iterated (a notebook cell, a CLI, ``collect``), the calling thread waits for each token.
    Or an event loop's :class:`~ollama_nb.serving.pump.ChunkPump` calls :meth:`start` with a
    sink: the model's worker then hands every event straight to the loop, which shapes it with
    :meth:`shape`. That saves a thread hop per token (worker -> pump thread -> loop), and on a
    small machine every wake-up of a third thread is time taken from llama.cpp's own.

    Either way :meth:`finish` ends it. Leaving early (a client hung up, Stop, a kernel
    interrupt) cancels the generation before its next token and waits until the worker has let
    go of the sequence, so the next request finds the model free. The result the worker then
    reports still goes into the request record, marked ``done_reason="cancel"``.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        model: str,
        started_ns: int,
        acquire: Acquire,
        prepare: Callable[[Engine], GenerationJob],
        replies: Replies,
    ) -> None:
        self._pipeline = pipeline
        self._model = model
        self._started_ns = started_ns
        self._acquire = acquire
        self._prepare = prepare
        self._replies = replies
        self._cancel = threading.Event()
        self._worker_done = threading.Event()
        self._outcome: GenerationResult | BaseException | None = None  # the worker's last word
        self._delivered = False  # the result (or an error) was shaped for the consumer
        self._clock: RequestClock | None = None
        self._runner: Runner | None = None
        self._finish_lock = threading.Lock()
        self._iterator: Iterator[Any] | None = None

    # -- pushing: the worker calls the sink, the consumer shapes --------------------------------

    def start(self, sink: Callable[[Any], None]) -> None:
        """Admit the request, get its model loaded (blocking) and queue it on the worker, which
        calls ``sink`` from its own thread with every piece and, last, the result or the
        exception it ended with."""
        clock, runner = self._pipeline._admit(self._started_ns, self._acquire)
        self._clock, self._runner = clock, runner

        def admitted(engine: Engine) -> GenerationJob:
            clock.ticket.leave()
            return self._prepare(engine)

        def done(outcome: GenerationResult | BaseException) -> None:
            self._outcome = outcome
            self._worker_done.set()  # before the sink: a consumer that sees the end never waits
            sink(outcome)

        try:
            runner.generate(GenerationRequest(admitted, sink, self._cancel, done))
        except BaseException:
            self._worker_done.set()
            self.finish()
            raise

    @staticmethod
    def is_last(event: Any) -> bool:
        return isinstance(event, (GenerationResult, BaseException))

    def shape(self, event: Any) -> list[Any]:
        """The chunks one worker event becomes (on any thread, one at a time); the worker's
        exception is raised here, in the consumer."""
        assert self._clock is not None
        if isinstance(event, BaseException):
            self._delivered = True
            raise event
        if isinstance(event, GenerationResult):
            self._delivered = True
            chunks = list(self._replies.flush())
            timings = self._clock.timings(event)
            reason = "stop" if event.done_reason == "cancel" else event.done_reason
            chunks.append(self._replies.final(event, timings, reason))
            self._pipeline.notify(self._clock.record(self._replies.endpoint, self._model, timings, reason))
            return chunks
        self._clock.first_token()
        chunk = self._replies.piece(event)
        return [] if chunk is None else [chunk]

    def cancel(self) -> None:
        """Ask the worker to stop before its next token (never blocks)."""
        self._cancel.set()

    def finish(self) -> None:
        """Cancel what still runs, wait for the worker to let go, count a request nobody read
        to the end, and release the model (blocking; once, whoever calls it first)."""
        with self._finish_lock:
            runner, clock, self._runner = self._runner, self._clock, None
        if runner is None or clock is None:
            return
        try:
            self._cancel.set()
            _wait_through_interrupts(self._worker_done)
            if not self._delivered and isinstance(self._outcome, GenerationResult):
                self._report_abandoned(clock, self._outcome)
        finally:
            clock.ticket.leave()
            self._pipeline.scheduler.release(runner)

    def _report_abandoned(self, clock: RequestClock, result: GenerationResult) -> None:
        try:
            record = clock.record(self._replies.endpoint, self._model, clock.timings(result), "cancel")
            self._pipeline.notify(record)
        except Exception:
            log.exception("recording an abandoned request failed")

    # -- iterating: the calling thread waits for each event -------------------------------------

    def _chunks(self) -> Iterator[Any]:
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.start(events.put)
        try:
            while True:
                event = events.get()
                yield from self.shape(event)
                if self.is_last(event):
                    return
        finally:
            self.finish()

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._chunks()
        return next(self._iterator)

    def close(self) -> None:
        """Leave early: cancels the generation (see the class docstring)."""
        if self._iterator is not None:
            self._iterator.close()


def _wait_through_interrupts(finished: threading.Event) -> None:
    """Wait for the worker to let go of a cancelled request, even through a second Ctrl-C in a
    kernel: releasing the model while its worker still decodes for us would hand the next
    request a busy sequence. The worker stops within one token, so the wait is short."""
    while True:
        try:
            finished.wait()
            return
        except KeyboardInterrupt:
            log.debug("interrupt while a cancelled generation winds down; still waiting for it")
