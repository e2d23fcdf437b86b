"""One loaded model on llama.cpp: the only module that imports ``llama_cpp``.

We let llama-cpp-python's ``Llama`` load the weights and create the context (it knows every
load option and LoRA), then drive generation ourselves through the low-level API:
decode, one C sampler chain per request, incremental detokenisation, stop strings on a rolling
tail, KV-cache prefix reuse across requests and context shift. The high-level
``create_completion`` re-detokenises the whole output on every token; this loop does not, which
is why it is faster on long outputs (see ``bench/``).

An ``Engine`` is not thread-safe: the scheduler gives each one a single worker thread.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import CorruptModel, InvalidRequest, OllamaNbError

log = logging.getLogger("ollama_nb.runtime")

_llama_cpp: Any = None


def llama_cpp_module() -> Any:
    """Import llama_cpp on first use so ``import ollama_nb`` stays fast."""
    global _llama_cpp
    if _llama_cpp is None:
        import llama_cpp

        _llama_cpp = llama_cpp
    return _llama_cpp


def supports_gpu_offload() -> bool:
    """Whether the installed llama.cpp build has a GPU backend (a build fact, not free VRAM)."""
    return bool(llama_cpp_module().llama_supports_gpu_offload())


def system_info() -> str:
    return llama_cpp_module().llama_print_system_info().decode("utf-8", "replace").strip()


# ---- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadParams:
    """Everything that fixes a llama.cpp context; a change means a reload (Ollama's rule)."""

    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu_layers: int = 0
    main_gpu: int = 0
    num_thread: int = 2
    use_mmap: bool = True
    flash_attention: bool = False
    adapters: tuple[str, ...] = ()
    embedding: bool = False
    num_parallel: int = 1  # sequences decoded together (OLLAMA_NUM_PARALLEL); each gets num_ctx


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int = -1


@dataclass
class GenerationJob:
    """One request as the engine sees it: tokens in, text out."""

    prompt_tokens: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    grammar: str | None = None
    stop: Sequence[str] = ()
    num_predict: int = -1
    num_keep: int = 4
    shift: bool = True
    reuse_cache: bool = True
    top_logprobs: int = -1  # -1: no logprobs; 0..20: logprobs with that many alternatives


@dataclass
class TokenPiece:
    """What the engine streams: a piece of text and, when asked for, its logprobs."""

    text: str
    token: int | None = None
    logprob: float | None = None
    top_logprobs: list[tuple[str, float]] | None = None


@dataclass
class GenerationResult:
    text: str
    done_reason: str
    tokens: list[int]
    prompt_eval_count: int
    prompt_eval_duration_ns: int
    eval_count: int
    eval_duration_ns: int
    cached_tokens: int
    first_token_ns: int | None = None


def json_grammar(fmt: str | dict[str, Any] | None) -> str | None:
    """GBNF for Ollama's ``format``: ``"json"`` or a JSON schema object (via llama.cpp's converter)."""
    if fmt is None or fmt == "":
        return None
    from llama_cpp import llama_grammar

    if fmt == "json":
        return llama_grammar.JSON_GBNF
    if isinstance(fmt, dict):
        try:
            return llama_grammar.json_schema_to_gbnf(json.dumps(fmt))
        except Exception as exc:  # the converter raises bare Exceptions on unsupported schemas
            raise InvalidRequest(f"invalid JSON schema in format: {exc}") from exc
    if isinstance(fmt, str):
        try:
            return json_grammar(json.loads(fmt))
        except json.JSONDecodeError:
            pass
    raise InvalidRequest(f"invalid format: {fmt!r}; expected \"json\" or a JSON schema object")


def render_jinja_chat(
    template: str,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    extra: dict[str, Any] | None = None,
) -> str:
    """Render a GGUF (Hugging Face) Jinja chat template the way llama-cpp-python does."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=eos_token,
        bos_token=bos_token,
        add_generation_prompt=add_generation_prompt,
    )
    try:
        return formatter(messages=messages, tools=tools or None, **(extra or {})).prompt
    except Exception as exc:  # jinja2 raises many types; all mean "this template can't render"
        raise InvalidRequest(f"template error: {exc}") from exc


# ---- the engine ------------------------------------------------------------------------------

_context_params_lock = threading.Lock()


@contextlib.contextmanager
def _sequences_per_context(n_seq: int) -> Iterator[None]:
    """Let the next ``Llama(...)`` create a context with ``n_seq`` sequences.

    ``Llama`` exposes no ``n_seq_max`` (it only raises it for embeddings), but it starts from
    ``llama_context_default_params()`` and never touches that field otherwise, so for the
    duration of one construction the defaults it reads carry our value. Each sequence gets its
    own KV stream of ``n_ctx / n_seq`` cells (not unified), as Ollama gives each parallel slot
    ``num_ctx``.
    """
    if n_seq <= 1:
        yield
        return
    import llama_cpp.llama as llama_module

    with _context_params_lock:
        original = llama_module.llama_cpp.llama_context_default_params

        def with_sequences() -> Any:
            params = original()
            params.n_seq_max = n_seq
            params.kv_unified = False
            return params

        llama_module.llama_cpp.llama_context_default_params = with_sequences
        try:
            yield
        finally:
            llama_module.llama_cpp.llama_context_default_params = original


class Engine:
    """A llama.cpp model + context, with prefix-reusing generation and embeddings."""

    def __init__(self, model_path: str, params: LoadParams) -> None:
        lc = llama_cpp_module()
        self.model_path = model_path
        self.params = params
        started = time.perf_counter_ns()
        parallel = 1 if params.embedding else max(1, params.num_parallel)
        try:
            with _sequences_per_context(parallel):
                self._llm = self._load(model_path, params, parallel)
        except (ValueError, RuntimeError, OSError) as exc:
            raise CorruptModel(model_path, f"llama.cpp could not load it ({exc})") from exc
        for extra in params.adapters[1:]:
            self._add_adapter(extra)
        self.load_duration_ns = time.perf_counter_ns() - started
        self._ctx = self._llm._ctx.ctx
        self._model = self._llm._model
        self._vocab = self._model.vocab
        self._batch = self._llm._batch
        self.n_parallel = parallel
        self.n_ctx: int = int(lc.llama_n_ctx_seq(self._ctx))  # what one sequence may use
        self.n_ctx_train: int = self._model.n_ctx_train()
        self.n_vocab: int = self._llm.n_vocab()
        self.n_batch: int = self._llm.n_batch
        self._memory = lc.llama_get_memory(self._ctx)
        self._can_shift = bool(self._memory is not None and lc.llama_memory_can_shift(self._memory))
        self._slots: list[list[int]] = [[] for _ in range(parallel)]  # each sequence's KV tokens
        self._last_used = [0] * parallel
        self._use_counter = 0
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self.metadata: dict[str, str] = dict(self._llm.metadata)
        self.bos_id: int = self._model.token_bos()
        self.eos_id: int = self._model.token_eos()
        self.bos_text = self._model.token_get_text(self.bos_id) if self.bos_id >= 0 else ""
        self.eos_text = self._model.token_get_text(self.eos_id) if self.eos_id >= 0 else ""
        self.add_bos: bool = bool(self._model.add_bos_token())
        self.model_size: int = int(self._model.size())
        self.closed = False

    @staticmethod
    def _load(model_path: str, params: LoadParams, parallel: int) -> Any:
        """The weights, one context of ``num_ctx`` per sequence, and the LoRA adapter if any."""
        return _llama_cpp.Llama(
            model_path=model_path,
            n_ctx=params.num_ctx * parallel,
            n_batch=params.num_batch,
            n_ubatch=min(params.num_batch, 512),
            n_threads=params.num_thread,
            n_threads_batch=params.num_thread,
            n_gpu_layers=params.num_gpu_layers,
            main_gpu=params.main_gpu,
            use_mmap=params.use_mmap and not params.adapters,
            flash_attn=params.flash_attention,
            embedding=params.embedding,
            pooling_type=Engine._pooling_for(model_path) if params.embedding else -1,
            lora_path=params.adapters[0] if params.adapters else None,
            verbose=log.isEnabledFor(logging.DEBUG),
        )

    @staticmethod
    def _pooling_for(model_path: str) -> int:
        """Mean pooling for generative models whose GGUF names no pooling type (Ollama does the same)."""
        from .gguf_meta import read_gguf_info

        info = read_gguf_info(model_path)
        declared = info.model_info.get(f"{info.architecture}.pooling_type")
        return int(declared) if declared is not None else 1  # LLAMA_POOLING_TYPE_MEAN

    def _add_adapter(self, path: str) -> None:
        raise InvalidRequest(f"only one ADAPTER per model is supported (extra: {path})")

    # -- tokens -----------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        tokens = self._model.tokenize(text.encode("utf-8"), add_special and self.add_bos, parse_special)
        if len(tokens) > 1 and tokens[0] == self.bos_id and tokens[1] == self.bos_id:
            tokens = tokens[1:]  # the template already wrote <bos>
        return tokens

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            lc = _llama_cpp
            n = lc.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, 0, False)
            cached = bytes(self._piece_buf[: max(n, 0)])
            self._pieces[token] = cached
        return cached

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(_llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def fim_tokens(self) -> tuple[int, int, int] | None:
        """(prefix, suffix, middle) ids when the vocabulary has fill-in-the-middle tokens."""
        ids = (self._model.token_prefix(), self._model.token_suffix(), self._model.token_middle())
        return ids if all(i is not None and i >= 0 for i in ids) else None

    # -- generation -------------------------------------------------------------------------

    def _sampler(self, job: GenerationJob) -> Any:
        lc = _llama_cpp
        s = job.sampling
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        add = lambda smpl: lc.llama_sampler_chain_add(chain, smpl)  # noqa: E731
        last_n = self.n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
        if last_n and (s.repeat_penalty != 1.0 or s.presence_penalty or s.frequency_penalty):
            penalties = lc.llama_sampler_init_penalties(
                self.n_vocab, last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
            )
            for tok in job.prompt_tokens[-last_n:]:
                lc.llama_sampler_accept(penalties, tok)
            add(penalties)
        if job.grammar:
            grammar = lc.llama_sampler_init_grammar(self._vocab, job.grammar.encode(), b"root")
            if not grammar:
                lc.llama_sampler_free(chain)
                raise InvalidRequest("invalid grammar for format")
            add(grammar)
        seed = s.seed if s.seed is not None and s.seed >= 0 else lc.LLAMA_DEFAULT_SEED
        seed &= 0xFFFFFFFF
        if s.temperature <= 0:
            add(lc.llama_sampler_init_greedy())
        elif s.mirostat == 1:
            add(lc.llama_sampler_init_temp(s.temperature))
            add(lc.llama_sampler_init_mirostat(self.n_vocab, seed, s.mirostat_tau, s.mirostat_eta, 100))
        elif s.mirostat == 2:
            add(lc.llama_sampler_init_temp(s.temperature))
            add(lc.llama_sampler_init_mirostat_v2(seed, s.mirostat_tau, s.mirostat_eta))
        else:
            if s.top_k > 0:
                add(lc.llama_sampler_init_top_k(s.top_k))
            if s.typical_p < 1.0:
                add(lc.llama_sampler_init_typical(s.typical_p, 1))
            if s.top_p < 1.0:
                add(lc.llama_sampler_init_top_p(s.top_p, 1))
            if s.min_p > 0.0:
                add(lc.llama_sampler_init_min_p(s.min_p, 1))
            add(lc.llama_sampler_init_temp(s.temperature))
            add(lc.llama_sampler_init_dist(seed))
        return chain

    # -- KV cache bookkeeping, per sequence ---------------------------------------------------

    def _forget_cache(self, seq: int | None = None) -> None:
        """Drop the KV of one sequence (or all): after an error its state is unknown."""
        if seq is None:
            if self._memory is not None:
                _llama_cpp.llama_memory_clear(self._memory, True)
            for cached in self._slots:
                cached.clear()
            return
        if self._memory is not None:
            _llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._slots[seq].clear()

    def _prepare_prompt(self, seq: int, prompt: list[int], reuse: bool) -> int:
        """Reuse the longest cached prefix of ``seq``; return how many prompt tokens it covers."""
        cached = self._slots[seq]
        if not reuse or self._memory is None:
            self._forget_cache(seq)
            return 0
        common = _common_prefix(cached, prompt)
        if common == len(prompt):
            common -= 1  # we need fresh logits for the last prompt token
        if common < len(cached):
            if not _llama_cpp.llama_memory_seq_rm(self._memory, seq, common, -1):
                self._forget_cache(seq)
                return 0
            del cached[common:]
        return common

    def _pick_slot(self, free: list[int], prompt: list[int]) -> int:
        """Where a prompt should run, so that conversations keep their KV between turns.

        A sequence whose whole cache is a prefix of the prompt is this conversation's previous
        turn: take it (the longest one). Otherwise take an empty sequence, and failing that the
        least recently used one, rather than overwrite another conversation that merely shares
        a system prompt with this one.
        """
        continuing = [s for s in free if self._slots[s] and _common_prefix(self._slots[s], prompt) == len(self._slots[s])]
        if continuing:
            chosen = max(continuing, key=lambda s: len(self._slots[s]))
        else:
            empty = [s for s in free if not self._slots[s]]
            chosen = empty[0] if empty else min(free, key=lambda s: self._last_used[s])
        self._use_counter += 1
        self._last_used[chosen] = self._use_counter
        return chosen

    def _fit_prompt(self, prompt: list[int], num_keep: int) -> list[int]:
        """Keep the start (num_keep) and the newest tokens when a prompt outgrows the context."""
        room = self.n_ctx - 1
        if len(prompt) <= room:
            return prompt
        keep = max(0, min(num_keep, room // 2))
        tail = room // 2
        log.warning("prompt of %d tokens truncated to fit num_ctx=%d", len(prompt), self.n_ctx)
        return prompt[:keep] + prompt[-tail:]

    def _shift_context(self, seq: int, num_keep: int) -> bool:
        """Drop half of the tokens after ``num_keep`` so generation can go on (Ollama's shift)."""
        cached = self._slots[seq]
        n_past = len(cached)
        keep = max(0, min(num_keep, n_past - 2))
        discard = (n_past - keep) // 2
        if not self._can_shift or discard <= 0:
            return False
        lc = _llama_cpp
        lc.llama_memory_seq_rm(self._memory, seq, keep, keep + discard)
        lc.llama_memory_seq_add(self._memory, seq, keep + discard, n_past, -discard)
        del cached[keep : keep + discard]
        return True

    def _top_logprobs(self, index: int, chosen: int, k: int) -> tuple[float, list[tuple[str, float]]]:
        import numpy as np

        ptr = _llama_cpp.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        peak = logits.max()
        logz = peak + math.log(float(np.exp(logits - peak).sum()))
        top: list[tuple[str, float]] = []
        if k > 0:
            best = np.argpartition(-logits, k)[:k]
            best = best[np.argsort(-logits[best])]
            top = [(self.piece(int(t)).decode("utf-8", "replace"), float(logits[t] - logz)) for t in best]
        return float(logits[chosen] - logz), top

    # -- generation -------------------------------------------------------------------------

    def generate(
        self,
        job: GenerationJob,
        emit: Callable[[TokenPiece], None],
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run one request to completion, calling ``emit`` for each piece of visible text."""
        outcome: list[GenerationResult | BaseException] = []
        request = GenerationRequest(lambda _engine: job, emit, cancel or threading.Event(), outcome.append)
        pending = [request]

        def take(n: int, idle: bool) -> list[GenerationRequest] | None:
            if pending:
                return [pending.pop()]
            return None if idle else []

        self.serve(take)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def serve(self, take: Callable[[int, bool], list[GenerationRequest] | None]) -> None:
        """Continuous batching: run every admitted request in one shared decode loop.

        Each step asks ``take(free_slots, idle)`` for newly arrived requests (``None`` means
        nothing is left and the loop may end; ``take`` decides that atomically with its own
        queue), puts their prompt chunks and one new token per generating sequence into a
        single batch, decodes it once and samples every sequence that got logits. With one
        request this is the plain generation loop; with several, llama.cpp evaluates them
        together, which is where the throughput gain comes from.
        """
        active: list[_Sequence] = []
        try:
            while True:
                busy = {s.seq for s in active}
                free = [i for i in range(self.n_parallel) if i not in busy]
                arrived = take(len(free), not active) if free else []
                if arrived is None:
                    return
                for request in arrived:
                    seq = self._admit(request, free)
                    if seq is not None:
                        active.append(seq)
                        free.remove(seq.seq)
                for s in active:
                    if s.cancel.is_set():
                        s.finish("cancel")
                active = [s for s in active if not s.finished]
                if active:
                    self._step(active)
                    active = [s for s in active if not s.finished]
        except BaseException as exc:
            self._forget_cache()  # an interrupted decode leaves the KV in an unknown state
            for s in active:
                s.fail(exc)
            raise

    def _admit(self, request: GenerationRequest, free: list[int]) -> _Sequence | None:
        try:
            job = request.prepare(self)
            prompt = self._fit_prompt(list(job.prompt_tokens), job.num_keep)
            if not prompt:
                prompt = [self.bos_id if self.bos_id >= 0 else self.eos_id]
            slot = self._pick_slot(free, prompt)
            reused = self._prepare_prompt(slot, prompt, job.reuse_cache)
            return _Sequence(self, slot, request, job, prompt, reused)
        except Exception as exc:  # this request's own fault (template, grammar): it alone fails
            request.done(exc)
            return None

    def _step(self, active: list[_Sequence]) -> None:
        """One batch: a token for every generating sequence, then prompt chunks up to n_batch."""
        lc = _llama_cpp
        batch = self._batch.batch
        n = 0
        for s in active:
            if s.next_token is not None:
                cached = self._slots[s.seq]
                batch.token[n] = s.next_token
                batch.pos[n] = len(cached)
                batch.seq_id[n][0] = s.seq
                batch.n_seq_id[n] = 1
                batch.logits[n] = True
                cached.append(s.next_token)
                s.logits_at = n
                s.next_token = None
                n += 1
        for s in active:
            if not s.todo or n >= self.n_batch:
                continue
            if s.decode_started_ns is None:
                s.decode_started_ns = time.perf_counter_ns()
            cached = self._slots[s.seq]
            chunk = s.todo[: self.n_batch - n]
            del s.todo[: len(chunk)]
            pos = len(cached)
            for i, tok in enumerate(chunk):
                batch.token[n] = tok
                batch.pos[n] = pos + i
                batch.seq_id[n][0] = s.seq
                batch.n_seq_id[n] = 1
                batch.logits[n] = False
                n += 1
            cached.extend(chunk)
            if not s.todo:
                batch.logits[n - 1] = True
                s.logits_at = n - 1
        batch.n_tokens = n
        rc = lc.llama_decode(self._ctx, batch)
        if rc != 0:
            raise OllamaNbError(f"llama_decode failed with code {rc}")
        for s in active:
            if s.logits_at >= 0:
                index, s.logits_at = s.logits_at, -1
                s.accept(lc.llama_sampler_sample(s.chain, self._ctx, index), index)

    # -- embeddings -------------------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, truncate: bool = True) -> tuple[list[list[float]], int]:
        """One pooled, L2-normalised vector per text (needs ``LoadParams.embedding``)."""
        import numpy as np

        if not self.params.embedding:
            raise OllamaNbError("model was not loaded for embeddings")
        lc = _llama_cpp
        limit = min(self.n_ctx, self.n_batch)
        vectors: list[list[float]] = []
        total_tokens = 0
        n_embd = self._llm.n_embd()
        for text in texts:
            tokens = self.tokenize(text, add_special=True, parse_special=False) or [self.bos_id]
            if len(tokens) > limit:
                if not truncate:
                    raise InvalidRequest("the input length exceeds the context length")
                tokens = tokens[:limit]
            total_tokens += len(tokens)
            self._forget_cache()
            batch = self._batch.batch
            batch.n_tokens = len(tokens)
            for i, tok in enumerate(tokens):
                batch.token[i] = tok
                batch.pos[i] = i
                batch.seq_id[i][0] = 0
                batch.n_seq_id[i] = 1
                batch.logits[i] = True
            if lc.llama_decode(self._ctx, batch) != 0:
                raise OllamaNbError("llama_decode failed while embedding")
            ptr = lc.llama_get_embeddings_seq(self._ctx, 0)
            vec = np.ctypeslib.as_array(ptr, shape=(n_embd,)).astype(np.float64)
            norm = float(np.linalg.norm(vec))
            vectors.append((vec / norm if norm > 0 else vec).tolist())
        self._forget_cache()
        return vectors, total_tokens

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._llm.close()


# ---- batched generation ----------------------------------------------------------------------


@dataclass
class GenerationRequest:
    """A request waiting for a sequence: how to build its job (on the worker, where tokenizing
    is safe), where its text goes, its cancel flag, and whom to tell when it ends."""

    prepare: Callable[[Engine], GenerationJob]
    emit: Callable[[TokenPiece], None]
    cancel: threading.Event
    done: Callable[[GenerationResult | BaseException], None]


class _Sequence:
    """One request decoding in sequence ``seq``: its sampler, stop handling and text state."""

    def __init__(
        self, engine: Engine, seq: int, request: GenerationRequest, job: GenerationJob,
        prompt: list[int], reused: int,
    ) -> None:
        self.engine = engine
        self.seq = seq
        self.job = job
        self.emit = request.emit
        self.cancel = request.cancel
        self.done = request.done
        self.prompt = prompt
        self.reused = reused
        self.todo = prompt[reused:]
        self.chain = engine._sampler(job)
        self.stops = [s for s in job.stop if s]
        self.max_stop = max((len(s) for s in self.stops), default=0)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.generated: list[int] = []
        self.text_parts: list[str] = []
        self.pending = ""
        self.next_token: int | None = None
        self.logits_at = -1
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

    def accept(self, token: int, index: int) -> None:
        """Handle a sampled token: end of generation, a stop string, or visible text."""
        engine, job = self.engine, self.job
        if self.first_token_ns is None:
            self.first_token_ns = time.perf_counter_ns()
        if engine.is_eog(token):
            self.finish("stop")
            return
        self.generated.append(token)
        info = None
        if job.top_logprobs >= 0:
            lp, top = engine._top_logprobs(index, token, job.top_logprobs)
            info = TokenPiece("", token, lp, top)
        self.pending += self.decoder.decode(engine.piece(token))
        stops = self.stops
        if stops:
            hit = _first_stop(self.pending, stops)
            if hit >= 0:
                self._flush(self.pending[:hit], info)
                self.pending = ""
                self.finish("stop")
                return
            safe = len(self.pending) - _stop_prefix_len(self.pending, stops, self.max_stop)
        else:
            safe = len(self.pending)
        if safe > 0 or info is not None:
            self._flush(self.pending[:safe], info)
            self.pending = self.pending[safe:]
        if 0 <= job.num_predict <= len(self.generated):
            self.finish("length")
            return
        if len(engine._slots[self.seq]) >= engine.n_ctx:
            if not (job.shift and engine._shift_context(self.seq, job.num_keep)):
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
        _llama_cpp.llama_sampler_free(self.chain)
        now = time.perf_counter_ns()
        started = self.decode_started_ns or self.admitted_ns
        first = self.first_token_ns or now
        self.done(
            GenerationResult(
                text="".join(self.text_parts),
                done_reason=reason,
                tokens=self.prompt + self.generated,
                prompt_eval_count=len(self.prompt) - self.reused,
                prompt_eval_duration_ns=first - started,
                eval_count=len(self.generated),
                eval_duration_ns=now - first if self.generated else 0,
                cached_tokens=self.reused,
                first_token_ns=first - self.admitted_ns if self.first_token_ns else None,
            )
        )

    def fail(self, exc: BaseException) -> None:
        if not self.finished:
            self.finished = True
            _llama_cpp.llama_sampler_free(self.chain)
            self.done(exc)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def _first_stop(text: str, stops: Sequence[str]) -> int:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def _stop_prefix_len(text: str, stops: Sequence[str], max_stop: int) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string."""
    for n in range(min(len(text), max_stop - 1), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0


def quantize(src: str, dst: str, ftype: int, *, threads: int = 0) -> None:
    """Requantise a GGUF with llama.cpp's own quantizer (what ``ollama create -q`` does)."""
    lc = llama_cpp_module()
    params = lc.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    rc = lc.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise OllamaNbError(f"quantization failed (llama.cpp returned {rc})")
