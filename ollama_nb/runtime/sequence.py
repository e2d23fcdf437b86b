"""One request decoding in one sequence of a shared context: its sampler, its stop strings,
its text, its timings. The engine's batch loop owns the decode; a sequence owns the rest."""

from __future__ import annotations

import codecs
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .drafting import PromptLookup
from .jobs import GenerationJob, GenerationRequest, GenerationResult, TokenPiece
from .library import lib
from .sampling import build_sampler, first_stop, is_plain_greedy, repeat_penalty, stop_prefix_len

if TYPE_CHECKING:
    from .prompt_end import LogitsSource


class SequenceHost(Protocol):
    """What a sequence needs from the engine whose batch loop decodes it, and nothing more:
    the engine's bookkeeping stays its own."""

    n_ctx: int
    n_vocab: int

    @property
    def vocab(self) -> Any: ...  # the llama_vocab pointer, for the sampler chain

    def is_eog(self, token: int) -> bool: ...

    def piece(self, token: int) -> bytes: ...

    def top_logprobs(self, index: LogitsSource, chosen: int, k: int) -> tuple[float, list[tuple[str, float]]]: ...

    def cached_tokens(self, seq: int) -> int: ...

    def shift_context(self, seq: int, num_keep: int) -> bool: ...


class SequenceState:
    """One request decoding in sequence ``seq``: its sampler, stop handling and text state."""

    def __init__(
        self, host: SequenceHost, seq: int, request: GenerationRequest, job: GenerationJob,
        prompt: list[int], reused: int,
    ) -> None:
        self.host = host
        self.seq = seq
        self.job = job
        self.emit = request.emit
        self.cancel = request.cancel
        self.done = request.done
        self.prompt = prompt
        self.reused = reused
        self.todo = prompt[reused:]
        self.chain = build_sampler(job, vocab=host.vocab, n_vocab=host.n_vocab, n_ctx=host.n_ctx)
        self.argmax = is_plain_greedy(job)  # sampled by the engine without the chain (runtime.sampling)
        self.penalty = repeat_penalty(job, host.n_ctx)  # applied by the engine before the chain
        self.stops = [s for s in job.stop if s]
        self.max_stop = max((len(s) for s in self.stops), default=0)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.generated: list[int] = []
        self.text_parts: list[str] = []
        self.pending = ""
        self.next_token: int | None = None
        self.logits_at = -1
        self.drafter = PromptLookup(prompt, job.draft) if job.draft > 0 else None
        self.draft: list[int] = []  # the drafted tokens in the batch being decoded, after next_token
        self.admitted_ns = time.perf_counter_ns()
        self.decode_started_ns: int | None = None
        self.first_token_ns: int | None = None
        self.finished = False

    def _flush(self, text: str, info: TokenPiece | None = None) -> None:
        if text or info is not None:
            self.text_parts.append(text)
            if info is not None:
                info.text = text
                self.emit(info)
            else:
                self.emit(TokenPiece(text))

    def accept(self, token: int, index: LogitsSource) -> None:
        """Handle a sampled token: end of generation, a stop string, or visible text."""
        host, job = self.host, self.job
        if self.first_token_ns is None:
            self.first_token_ns = time.perf_counter_ns()
        if host.is_eog(token):
            self.finish("stop")
            return
        self.generated.append(token)
        if self.drafter is not None:
            self.drafter.append(token)
        info = None
        if job.top_logprobs >= 0:
            lp, top = host.top_logprobs(index, token, job.top_logprobs)
            info = TokenPiece("", token, lp, top)
        self.pending += self.decoder.decode(host.piece(token))
        stops = self.stops
        if stops:
            hit = first_stop(self.pending, stops)
            if hit >= 0:
                self._flush(self.pending[:hit], info)
                self.pending = ""
                self.finish("stop")
                return
            safe = len(self.pending) - stop_prefix_len(self.pending, stops, self.max_stop)
        else:
            safe = len(self.pending)
        if safe > 0 or info is not None:
            self._flush(self.pending[:safe], info)
            self.pending = self.pending[safe:]
        if 0 <= job.num_predict <= len(self.generated):
            self.finish("length")
            return
        if host.cached_tokens(self.seq) >= host.n_ctx:
            if not (job.shift and host.shift_context(self.seq, job.num_keep)):
                self.finish("length")
                return
        self.next_token = token

    def finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        tail = self.pending + self.decoder.decode(b"", final=True)
        if tail:
            self._flush(tail)
        lib().llama_sampler_free(self.chain)
        now = time.perf_counter_ns()
        started = self.decode_started_ns or self.admitted_ns
        first = self.first_token_ns or now
        # Ollama always evaluates a prompt's last token again and counts it: a kept row of its
        # logits (runtime.prompt_end) stands in for that evaluation, and is counted the same
        reused = min(self.reused, len(self.prompt) - 1)
        self.done(
            GenerationResult(
                text="".join(self.text_parts),
                done_reason=reason,
                tokens=self.prompt + self.generated,
                prompt_eval_count=len(self.prompt) - reused,
                prompt_eval_duration=first - started,
                eval_count=len(self.generated),
                eval_duration=now - first if self.generated else 0,
                cached_tokens=reused,
                first_token_ns=first - self.admitted_ns if self.first_token_ns else None,
            )
        )

    def fail_quietly(self) -> None:
        """Free the sampler of a sequence that never started (its request is told elsewhere)."""
        if not self.finished:
            self.finished = True
            lib().llama_sampler_free(self.chain)

    def fail(self, exc: BaseException) -> None:
        if not self.finished:
            self.finished = True
            lib().llama_sampler_free(self.chain)
            self.done(exc)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def window_holds(window_start: int, common: int, n_swa: int) -> bool:
    """Whether a sequence whose sliding-window layers hold cells from position ``window_start``
    on (-1: none) can be reused for its first ``common`` tokens: the next token attends to the
    ``n_swa`` before it, and those layers keep only a ring of the newest cells (as in
    llama-server, whose rule this is: reuse stops where the ring no longer reaches)."""
    return n_swa <= 0 or common == 0 or 0 <= window_start <= max(0, common - n_swa)
