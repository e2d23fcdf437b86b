"""The one inference pipeline: admit a request, get its model loaded, run it on the model's
worker, turn its pieces into chunks, measure it once, and tell the observers.

``/api/generate`` and ``/api/chat`` go through :meth:`Pipeline.generate` with their own
:class:`~ollama_nb.manager.replies.Replies`; ``/api/embed`` through :meth:`Pipeline.call`. The
:class:`~ollama_nb.base.timings.Timings` made here is the one the reply, the request record
and every face after them carry.

Threads: the caller's thread iterates (a server's pump thread, a notebook cell, a CLI); the
model's worker generates; the two meet in a queue. Leaving the iterator early (a client hung
up, Stop, a kernel interrupt) cancels the generation before its next token.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..base.timings import Timings
from ..runtime import Engine, GenerationJob, GenerationRequest, GenerationResult, TokenPiece
from ..serving.admission import Ticket
from ..serving.scheduler import Runner, Scheduler
from .records import RequestRecord
from .replies import Replies

log = logging.getLogger("ollama_nb.manager")
T = TypeVar("T")
_END = object()

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
    ) -> Iterator[Any]:
        """The chunks of one generation, ``replies`` shaping them; ends with the final chunk."""
        clock, runner = self._admit(started_ns, acquire)
        stream: Iterator[TokenPiece | GenerationResult] | None = None
        try:

            def abandoned(result: GenerationResult) -> None:
                self.notify(clock.record(replies.endpoint, model, clock.timings(result), "cancel"))

            stream = _run_on_worker(runner, prepare, clock.ticket, abandoned)
            for item in stream:
                if isinstance(item, GenerationResult):
                    yield from replies.flush()
                    timings = clock.timings(item)
                    reason = "stop" if item.done_reason == "cancel" else item.done_reason
                    final = replies.final(item, timings, reason)
                    self.notify(clock.record(replies.endpoint, model, timings, reason))
                    yield final
                else:
                    clock.first_token()
                    chunk = replies.piece(item)
                    if chunk is not None:
                        yield chunk
        finally:
            if stream is not None:
                stream.close()  # cancels a generation the consumer left, before the release
            clock.ticket.leave()
            self.scheduler.release(runner)

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


def _run_on_worker(
    runner: Runner,
    prepare: Callable[[Engine], GenerationJob],
    ticket: Ticket,
    abandoned: Callable[[GenerationResult], None],
) -> Iterator[TokenPiece | GenerationResult]:
    """Queue a generation on the model's worker; yield its pieces, then its result.

    Leaving early (the caller closed the iterator) sets the cancel flag and waits until the
    worker has let go of the sequence, so the next request finds the model free. The result
    the worker then reports (its timings and the tokens produced so far) goes to ``abandoned``,
    so a request nobody read to the end is still counted; its record says
    ``done_reason="cancel"`` even when the worker happened to finish first.
    """
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cancel = threading.Event()
    finished = threading.Event()

    def admitted(engine: Engine) -> GenerationJob:
        ticket.leave()
        return prepare(engine)

    def done(outcome: GenerationResult | BaseException) -> None:
        events.put(outcome)  # an exception is handed to the consumer and re-raised there
        events.put(_END)
        finished.set()

    runner.generate(GenerationRequest(admitted, events.put, cancel, done))
    delivered = False  # the result reached the consumer (or an error did)
    try:
        while True:
            item = events.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                delivered = True
                raise item
            delivered = isinstance(item, GenerationResult)
            yield item
    finally:
        cancel.set()
        _wait_through_interrupts(finished)
        if not delivered:
            _report_abandoned(events, abandoned)


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


def _report_abandoned(events: queue.SimpleQueue[Any], abandoned: Callable[[GenerationResult], None]) -> None:
    """Hand the worker's last word on a stream its consumer left to ``abandoned``."""
    while True:
        try:
            item = events.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, GenerationResult):
            try:
                abandoned(item)
            except Exception:
                log.exception("recording an abandoned request failed")
            return
