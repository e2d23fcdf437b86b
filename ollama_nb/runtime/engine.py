"""One loaded model on llama.cpp.

We let llama-cpp-python's ``Llama`` load the weights and create the context (it knows every
load option and LoRA), then drive generation ourselves through the low-level API: one batch
loop per model decodes every active sequence together (continuous batching), with one C sampler
chain per request, incremental detokenisation, stop strings on a rolling tail, KV-cache prefix
reuse across requests and context shift. The high-level ``create_completion`` re-detokenises the
whole output on every token; this loop does not, which is why it is faster on long outputs.

An ``Engine`` is not thread-safe: the scheduler gives each one a single worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..base.errors import CorruptModel, InvalidRequest, OllamaNbError
from . import extra_buffers
from .huge_pages import collapse_resident, copy_weights
from .jobs import GenerationRequest, LoadParams
from .library import lib
from .memory import mapped_ranges, release_zero_pages
from .prompt_cache import PromptCache
from .prompt_end import LogitsSource, PromptEnd, sample_row
from .sequence import SequenceState, common_prefix, window_holds
from .threads import ThreadGovernor
from .vision import NO_PROJECTOR, MediaPrompt, Projector, check_projector
from .window_checkpoints import WindowCheckpoint, WindowCheckpoints, even_stop

log = logging.getLogger("ollama_nb.runtime")


_default_params_lock = threading.Lock()

#: Across streams a shared prefix is copied with the whole sequence it lies in: worth it while the
#: prefix is at least 1/_COPY_WORTH of that sequence (a cell copies some hundred times faster
#: than its token evaluates, so the margin is wide).
_COPY_WORTH = 16
#: A prefix shorter than this is cheaper to evaluate again than to keep the window cells of.
MIN_CHECKPOINT = 64
#: Texts whose tokens are kept for the same text again (``Engine.tokenize``): shorter ones take
#: microseconds, and a few megabytes of them at most are kept.
_KEEP_TOKENS_FROM, _KEEP_TOKENS_UP_TO, _KEPT_TEXTS = 2_000, 1_000_000, 4
_WINDOW_ONLY = 1  # LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY: a state of the sliding-window layers' cells alone


@contextlib.contextmanager
def _llama_defaults(n_seq: int, use_extra_buffers: bool, unified: bool) -> Iterator[None]:
    """Let the next ``Llama(...)`` create a context with ``n_seq`` sequences, in one pool of
    cells (``unified``) or a stream each, and load its weights with or without the CPU's extra
    buffer types.

    ``Llama`` exposes neither ``n_seq_max`` (it only raises it for embeddings) nor
    ``use_extra_bufts``, but it starts from ``llama_context_default_params()`` and
    ``llama_model_default_params()`` and never touches those fields, so for the duration of one
    construction the defaults it reads carry our values. By default each sequence has a stream
    of ``num_ctx`` cells, as llama-server's ``-np`` gives each slot: a token's attention then
    looks over its own sequence's cells only, where in one pool it looks over everyone's (8
    clients of SmolLM2: 131 tokens/s in streams, 118 unified; llama-server 125 and 108). A batch
    over streams is cut into a decode per run of consecutive sequence ids, so ``_step`` orders
    its tokens by sequence (unordered, four clients ran up to four decodes a step). A unified
    pool (``OLLAMA_NB_KV_UNIFIED``) lets two sequences share the cells of a common prefix
    without a copy. Extra buffer types are off where the CPU probe saw them crash
    (``runtime.extra_buffers``).
    """
    if n_seq <= 1 and use_extra_buffers:
        yield
        return
    import llama_cpp.llama as llama_module

    bindings = llama_module.llama_cpp
    with _default_params_lock:
        context_defaults = bindings.llama_context_default_params
        model_defaults = bindings.llama_model_default_params

        def with_sequences() -> Any:
            params = context_defaults()
            if n_seq > 1:
                params.n_seq_max = n_seq
                params.kv_unified = unified
            return params

        def with_buffers() -> Any:
            params = model_defaults()
            params.use_extra_bufts = use_extra_buffers
            return params

        bindings.llama_context_default_params = with_sequences
        bindings.llama_model_default_params = with_buffers
        try:
            yield
        finally:
            bindings.llama_context_default_params = context_defaults
            bindings.llama_model_default_params = model_defaults


class Engine:
    """A llama.cpp model + context, with prefix-reusing generation and embeddings."""

    def __init__(self, model_path: str, params: LoadParams) -> None:
        lc = lib()
        self.model_path = model_path
        if params.extra_buffers is None:
            decision = extra_buffers.decide()
            extra_buffers.check_loadable(decision)
            params = dataclasses.replace(params, extra_buffers=decision.enabled)
        if params.adapters:  # llama-cpp-python reads a model in whenever a LoRA comes with it
            params = dataclasses.replace(params, use_mmap=False)
        elif params.use_mmap is None:  # Ollama's "automatic": on the CPU, read in for huge pages
            params = dataclasses.replace(params, use_mmap=not copy_weights(model_path, params.num_gpu_layers))
        if params.swa_full is None:
            # A sliding-window model's window layers get a ring of n_swa + n_ubatch cells, as in
            # llama-server (gemma3's KV at 4,096 tokens: 27 MiB, not 72), except in a unified
            # cache of several sequences: cells two sequences share never return to the ring.
            params = dataclasses.replace(params, swa_full=params.kv_unified and params.num_parallel > 1)
        # Threads: a fixed num_thread, or a governor that follows the machine (runtime.threads);
        # its first measurement spans the load, which starts with one thread per core.
        requested_threads = params.num_thread
        self.governor = ThreadGovernor() if requested_threads <= 0 else None
        if self.governor is not None:
            self.governor.begin()
            params = dataclasses.replace(params, num_thread=self.governor.cores)
        started = time.perf_counter_ns()
        parallel = 1 if params.embedding else max(1, params.num_parallel)
        mapped_before = mapped_ranges()
        try:
            self._llm, loaded = self._create(model_path, params, parallel)
        except (ValueError, RuntimeError, OSError) as exc:
            raise CorruptModel(model_path, f"llama.cpp could not load it ({exc})") from exc
        self.params = dataclasses.replace(loaded, num_thread=requested_threads)  # 0 stays "automatic"
        for extra in params.adapters[1:]:
            self._add_adapter(extra)
        self.load_duration_ns = time.perf_counter_ns() - started
        self._ctx = self._llm._ctx.ctx
        self._model = self._llm._model
        self._vocab = self._model.vocab
        self._batch = self._llm._batch
        self.n_parallel = parallel
        self.kv_unified = params.kv_unified and parallel > 1  # one pool of cells, which sequences can share
        # What one sequence may use: num_ctx, as Ollama gives each parallel slot (in a unified
        # cache the cells are everyone's, so this limit is ours to keep, by truncation and shift).
        self.n_ctx: int = min(int(lc.llama_n_ctx_seq(self._ctx)), params.num_ctx)
        self.n_ctx_train: int = self._model.n_ctx_train()
        self.n_vocab: int = self._llm.n_vocab()
        self.n_batch: int = self._llm.n_batch
        self.n_ubatch: int = int(lc.llama_n_ubatch(self._ctx))
        self._memory = lc.llama_get_memory(self._ctx)
        self._can_shift = bool(self._memory is not None and lc.llama_memory_can_shift(self._memory))
        self.n_swa: int = int(lc.llama_model_n_swa(self._llm.model))  # sliding-window attention, 0: none
        self._slots: list[list[int]] = [[] for _ in range(parallel)]  # each sequence's KV tokens
        self._prompt_ends: list[PromptEnd | None] = [None] * parallel  # runtime.prompt_end, per sequence
        self._last_used = [0] * parallel
        self._busy: set[int] = set()  # the sequences of the requests decoding now
        self._use_counter = 0
        self.prompt_cache = PromptCache(params.prompt_cache_mb * 1024 * 1024)
        # a ring of window cells (runtime.window_checkpoints): a parted prefix's window is saved
        self._ring = self.n_swa > 0 and not self.params.swa_full
        self.window_checkpoints = WindowCheckpoints(parallel, params.prompt_cache_mb * 1024 * 1024)
        self._checkpoint_at = [0] * parallel  # save one when the prompt's evaluation gets there
        self._pieces: dict[int, bytes] = {}
        self._tokenized: dict[tuple[str, bool, bool], tuple[int, ...]] = {}  # (text, flags): tokens
        self._tokenized_lock = threading.Lock()  # /api/tokenize runs beside generation
        self._eog: dict[int, bool] = {}
        # numpy views of llama.cpp's logits rows, by address: the rows stay where they are from
        # one decode step to the next (llama.cpp reallocates only to hold more outputs), and
        # making a view costs more than the argmax over SmolLM2's vocabulary it is for
        self._logit_rows: dict[int, np.ndarray] = {}
        self.metadata: dict[str, str] = dict(self._llm.metadata)
        self.bos_id: int = self._model.token_bos()
        self.eos_id: int = self._model.token_eos()
        self.bos_text = self._model.token_get_text(self.bos_id) if self.bos_id >= 0 else ""
        self.eos_text = self._model.token_get_text(self.eos_id) if self.eos_id >= 0 else ""
        self.add_bos: bool = bool(self._model.add_bos_token())
        self.model_size: int = int(self._model.size())
        self.closed = False
        self.released_bytes = release_zero_pages(mapped_before) if params.lazy_memory else 0
        # on the CPU only: a GPU's host buffers are pinned, and its weights are not read from here
        self.huge_page_bytes = collapse_resident(mapped_before) if params.num_gpu_layers == 0 else 0
        log.debug("released %d MiB of zeroed buffers, %d MiB in huge pages", self.released_bytes >> 20,
                  self.huge_page_bytes >> 20)
        self.threads = params.num_thread
        self.projector: Projector | None = None
        if params.projector:
            try:
                check_projector(params.projector, model_path)  # in a child: a bad file must not kill us
                self.projector = Projector(params.projector, self._llm.model, use_gpu=params.num_gpu_layers != 0,
                                           threads=max(1, params.num_thread or 1))
            except BaseException:
                self._llm.close()
                raise
        if self.governor is not None:
            self._use_threads(self.governor.settle())

    def _use_threads(self, n: int) -> None:
        """Compute the next decode steps with ``n`` threads (prompt batches too)."""
        if n != self.threads:
            lib().llama_set_n_threads(self._ctx, n, n)
            self.threads = n

    @classmethod
    def _create(cls, model_path: str, params: LoadParams, parallel: int) -> tuple[Any, LoadParams]:
        """Load with flash attention when asked, and without it where this model or backend
        cannot have it (Ollama's rule: the setting is a wish, never a reason to fail a load).
        Returns the ``Llama`` and the parameters it really got."""
        try:
            with _llama_defaults(parallel, params.extra_buffers is not False, params.kv_unified):
                return cls._load(model_path, params, parallel), params
        except (ValueError, RuntimeError) as exc:
            if not params.flash_attention:
                raise
            log.warning("%s: no context with flash attention (%s); loading without it", model_path, exc)
        plain = dataclasses.replace(params, flash_attention=False, kv_cache_type=1)
        with _llama_defaults(parallel, plain.extra_buffers is not False, plain.kv_unified):
            return cls._load(model_path, plain, parallel), plain

    @staticmethod
    def _load(model_path: str, params: LoadParams, parallel: int) -> Any:
        """The weights, one context of ``num_ctx`` per sequence, and the LoRA adapter if any."""
        return lib().Llama(
            model_path=model_path,
            n_ctx=params.num_ctx * parallel,
            n_batch=params.num_batch,
            n_ubatch=min(params.num_batch, 512),
            n_threads=params.num_thread,
            n_threads_batch=params.num_thread,
            n_gpu_layers=params.num_gpu_layers,
            main_gpu=params.main_gpu,
            use_mmap=bool(params.use_mmap),
            swa_full=bool(params.swa_full),
            flash_attn=params.flash_attention,
            type_k=params.kv_cache_type,
            type_v=params.kv_cache_type,
            embedding=params.embedding,
            pooling_type=params.pooling_type if params.embedding else -1,
            lora_path=params.adapters[0] if params.adapters else None,
            verbose=log.isEnabledFor(logging.DEBUG),
        )

    def _add_adapter(self, path: str) -> None:
        raise InvalidRequest(f"only one ADAPTER per model is supported (extra: {path})")

    # -- tokens -----------------------------------------------------------------------------

    @property
    def media_marker(self) -> str | None:
        return self.projector.marker if self.projector is not None else None

    def media_prompt(self, text: str, images: Sequence[bytes]) -> MediaPrompt:
        """``text`` (one :attr:`media_marker` per image) and ``images`` cut into chunks."""
        if self.projector is None:
            raise InvalidRequest(NO_PROJECTOR)
        return self.projector.prompt(text, images, add_special=self.add_bos)

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """The text's tokens. The same long prompt comes again often (a cell run again, a
        regenerated reply, a client's retry), is then answered from its kept logits in a few
        milliseconds, and would spend 2 of them tokenizing 1,500 tokens again: the last few
        long texts keep their tokens."""
        key = (text, add_special, parse_special)
        with self._tokenized_lock:
            known = self._tokenized.get(key)
        if known is not None:
            return list(known)
        tokens = self._model.tokenize(text.encode("utf-8"), add_special and self.add_bos, parse_special)
        if len(tokens) > 1 and tokens[0] == self.bos_id and tokens[1] == self.bos_id:
            tokens = tokens[1:]  # the template already wrote <bos>
        if _KEEP_TOKENS_FROM <= len(text) <= _KEEP_TOKENS_UP_TO:
            with self._tokenized_lock:
                if len(self._tokenized) >= _KEPT_TEXTS:
                    del self._tokenized[next(iter(self._tokenized))]  # the oldest
                self._tokenized[key] = tuple(tokens)
        return tokens

    def piece(self, token: int) -> bytes:
        """A token's bytes. Safe from any thread (``/api/detokenize`` runs beside generation):
        a miss fills its own buffer, and the cache is a dict the GIL keeps whole."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(256)
            n = lib().llama_token_to_piece(self._vocab, token, buf, 256, 0, False)
            cached = buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        known = self._eog.get(token)
        if known is None:
            known = self._eog[token] = bool(lib().llama_vocab_is_eog(self._vocab, token))
        return known

    def fim_tokens(self) -> tuple[int, int, int] | None:
        """(prefix, suffix, middle) ids when the vocabulary has fill-in-the-middle tokens."""
        ids = (self._model.token_prefix(), self._model.token_suffix(), self._model.token_middle())
        return ids if all(i is not None and i >= 0 for i in ids) else None

    # -- generation -------------------------------------------------------------------------

    # -- KV cache bookkeeping, per sequence ---------------------------------------------------

    def _forget_cache(self, seq: int | None = None) -> None:
        """Drop the KV of one sequence (or all): after an error its state is unknown."""
        if seq is None:
            if self._memory is not None:
                lib().llama_memory_clear(self._memory, True)
            for cached in self._slots:
                cached.clear()
            self._prompt_ends = [None] * self.n_parallel
            for other in range(self.n_parallel):
                self._forget_checkpoints(other)
            return
        if self._memory is not None:
            lib().llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._slots[seq].clear()
        self._prompt_ends[seq] = None
        self._forget_checkpoints(seq)

    def _forget_checkpoints(self, seq: int) -> None:
        self.window_checkpoints.clear(seq)
        self._checkpoint_at[seq] = 0

    def _prepare_prompt(self, seq: int, prompt: list[int], reuse: bool, *, whole: bool = True) -> int:
        """Reuse the longest cached prefix of ``seq``; return how many prompt tokens it covers:
        all of them only when ``whole`` allows it and the last one's logits were kept
        (``runtime.prompt_end``), else at most all but the last, which is evaluated again."""
        cached = self._slots[seq]
        self._checkpoint_at[seq] = 0  # one an earlier request did not get to
        if not reuse or self._memory is None:
            self._forget_cache(seq)
            return 0
        common = common_prefix(cached, prompt)
        parted = common < min(len(cached), len(prompt))  # the two go different ways from here
        end = self._prompt_ends[seq]
        if common == len(prompt) and not (whole and end is not None and end.n_tokens == common):
            common -= 1  # the first reply token needs the last prompt token's logits
        if common < len(cached):
            if not lib().llama_memory_seq_rm(self._memory, seq, common, -1):
                self._forget_cache(seq)
                return 0
            del cached[common:]
            self.window_checkpoints.cut(seq, common)
            if end is not None and end.n_tokens > common:
                self._prompt_ends[seq] = None
        reused = common if self._window_holds(seq, common) else self._restore_checkpoint(seq, common)
        if parted and self._ring and common >= MIN_CHECKPOINT:
            # where the prompt is evaluated anyway, stop for the checkpoint only where that
            # leaves every token on the kernel a straight evaluation gives it
            at = common if reused == common else even_stop(reused, common, len(prompt), self.n_batch,
                                                             self.n_ubatch, lowest=MIN_CHECKPOINT)
            if not self.window_checkpoints.has(seq, at):
                if at == reused:
                    self._save_checkpoint(seq)
                else:
                    self._checkpoint_at[seq] = at
        return reused

    def _restore_checkpoint(self, seq: int, common: int) -> int:
        """Where the ring has moved past the first ``common`` tokens: go back to the longest
        checkpoint within them (``runtime.window_checkpoints``), or to nothing. Returns the
        prefix ``seq`` now holds."""
        lc = lib()
        checkpoint = self.window_checkpoints.best(seq, common, self.n_swa)
        if checkpoint is not None:
            kept = checkpoint.n_tokens
            data = checkpoint.data
            if (lc.llama_memory_seq_rm(self._memory, seq, kept, -1)
                    and lc.llama_state_seq_set_data_ext(self._ctx, data, len(data), seq, _WINDOW_ONLY) != 0):
                del self._slots[seq][kept:]
                self.window_checkpoints.cut(seq, kept)
                end = self._prompt_ends[seq]
                if end is not None and end.n_tokens > kept:
                    self._prompt_ends[seq] = None  # a checkpoint at the prompt's end keeps its logits
                return kept
        self._forget_cache(seq)  # the prompt is evaluated again from the start
        return 0

    def _save_checkpoint(self, seq: int) -> None:
        """Keep the window cells of what ``seq`` holds now. Only a state taken there will do:
        llama.cpp restores a window state as far back as its newest cell's window reaches
        (older cells are dropped), and a prompt's evaluation stopped where a short piece is left
        moves its log-probabilities (``even_stop``)."""
        n_tokens = len(self._slots[seq])
        lc = lib()
        start = self._window_start(seq)
        if not window_holds(start, n_tokens, self.n_swa):
            return  # the ring has already gone past them
        size = int(lc.llama_state_seq_get_size_ext(self._ctx, seq, _WINDOW_ONLY))
        if size <= 0 or size > self.window_checkpoints.limit_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = int(lc.llama_state_seq_get_data_ext(self._ctx, buffer, size, seq, _WINDOW_ONLY))
        if written:
            data = buffer if written == size else (ctypes.c_uint8 * written).from_buffer(buffer)
            self.window_checkpoints.add(seq, WindowCheckpoint(n_tokens, start, data))

    def _window_start(self, seq: int) -> int:
        """The oldest position the sliding-window layers of ``seq`` hold (-1: none; 0 for a
        model without a window)."""
        return int(lib().llama_memory_seq_pos_min(self._memory, seq)) if self.n_swa > 0 else 0

    def _window_holds(self, seq: int, common: int) -> bool:
        """Whether ``seq`` cut to its first ``common`` tokens still has every cell the next token
        attends to (``sequence.window_holds``). Unless the window's cache is full size, its layers
        keep a ring of about n_swa + n_ubatch cells: a sequence cut further back than that, or one
        restored from a state saved with only its newest cells, would attend to nothing there."""
        return window_holds(self._window_start(seq), common, self.n_swa)

    def _swap_in(self, seq: int, prompt: list[int], *, share: bool = True) -> None:
        """Before ``prompt`` overwrites sequence ``seq``: save what the sequence holds; then give
        it the longest prefix of the prompt there is, from another sequence's cells (``share``)
        or from a state saved in RAM (``runtime.prompt_cache``)."""
        if self._memory is None:
            return
        cached = self._slots[seq]
        live = common_prefix(cached, prompt)
        if not self._window_holds(seq, live):  # cut back that far, it goes on from a checkpoint at best
            checkpoint = self.window_checkpoints.best(seq, live, self.n_swa)
            live = checkpoint.n_tokens if checkpoint is not None else 0
        # Saved when the prompt overwrites most of it (another conversation), not when it keeps
        # most and replaces the tail (the same prompt again, an edited last turn): llama-server
        # truncates such a slot too, and the copy would be on this request's first token.
        if live < len(cached) // 2 and self.prompt_cache.worth_saving(cached):
            self._save_state(seq)
        if share:
            live = self._share_prefix(seq, prompt, live)
        found = self.prompt_cache.best(prompt, better_than=live, n_swa=self.n_swa)
        if found is None:
            return
        state = found[0]
        lc = lib()
        lc.llama_memory_seq_rm(self._memory, seq, -1, -1)
        cached.clear()
        self._forget_checkpoints(seq)
        data = state.data
        if not isinstance(data, ctypes.Array):
            data = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if lc.llama_state_seq_set_data(self._ctx, data, len(data), seq) == 0:
            self._forget_cache(seq)  # no room for it: the prompt is evaluated from scratch
            return
        cached.extend(state.tokens)
        self._prompt_ends[seq] = state.prompt_end

    def _share_prefix(self, seq: int, prompt: list[int], live: int) -> int:
        """Let ``seq`` start from the cells of the longest prefix of ``prompt`` another sequence
        holds, if longer than the ``live`` tokens it shares itself (the same system prompt, a
        regenerated reply, a conversation branching off). In a unified cache a cell can belong
        to several sequences, so this costs no copy and no cell; across streams the other
        sequence's cells are copied (a state copy, as the prompt cache makes: SmolLM2's 1,200
        tokens are 26 MiB, copied out and in within milliseconds, where evaluating them takes a
        second). Returns the prefix ``seq`` now holds."""
        best, source = live, -1
        for other, tokens in enumerate(self._slots):
            if other != seq and len(tokens) > best:
                common = common_prefix(tokens, prompt)
                if common > best and self._window_holds(other, common):
                    best, source = common, other
        if source < 0 or (not self.kv_unified and (best - live) * _COPY_WORTH < len(self._slots[source])):
            return live
        lc = lib()
        cached = self._slots[seq]
        lc.llama_memory_seq_rm(self._memory, seq, -1, -1)
        self._forget_checkpoints(seq)
        if self.kv_unified:
            lc.llama_memory_seq_cp(self._memory, source, seq, 0, best)
        elif not self._copy_sequence(source, seq, best):
            self._forget_cache(seq)
            return 0
        cached[:] = prompt[:best]
        end = self._prompt_ends[source]
        self._prompt_ends[seq] = end if end is not None and end.n_tokens <= best else None  # the values it came from
        return best

    def _copy_sequence(self, source: int, seq: int, keep: int) -> bool:
        """Copy the first ``keep`` tokens' cells of ``source`` into the (empty) stream of ``seq``."""
        lc = lib()
        data = self._read_state(source)
        if data is None or lc.llama_state_seq_set_data(self._ctx, data, len(data), seq) == 0:
            return False
        return bool(lc.llama_memory_seq_rm(self._memory, seq, keep, -1))

    def _save_state(self, seq: int) -> None:
        data = self._read_state(seq, limit=self.prompt_cache.limit_bytes)
        if data is not None:
            self.prompt_cache.save(self._slots[seq], data, self._prompt_ends[seq], self._window_start(seq))

    def _read_state(self, seq: int, *, limit: int | None = None) -> ctypes.Array | None:
        """Sequence ``seq``'s cells as llama.cpp serialises them, if any (and within ``limit``
        bytes). The buffer llama.cpp writes into is what is kept and what a restore reads from:
        a 1,200-token state is 26 MiB, and each extra copy of it cost 3-6 ms of a turn's first
        token."""
        lc = lib()
        size = int(lc.llama_state_seq_get_size(self._ctx, seq))
        if size <= 0 or (limit is not None and size > limit):
            return None
        buffer = (ctypes.c_uint8 * size)()
        written = int(lc.llama_state_seq_get_data(self._ctx, buffer, size, seq))
        if not written:
            return None
        return buffer if written == size else (ctypes.c_uint8 * written).from_buffer(buffer)

    def _pick_slot(self, free: list[int], prompt: list[int]) -> int:
        """Where a prompt should run, so that conversations keep their KV between turns.

        A sequence whose whole cache is a prefix of the prompt is this conversation's previous
        turn: take it (the longest one). Otherwise take an empty sequence, and failing that the
        least recently used one, rather than overwrite another conversation that merely shares
        a system prompt with this one (that prefix is shared instead, see ``_share_prefix``).
        """
        continuing = [s for s in free if self._slots[s] and common_prefix(self._slots[s], prompt) == len(self._slots[s])]
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

    def shift_context(self, seq: int, num_keep: int) -> bool:
        """Drop half of the tokens after ``num_keep`` so generation can go on (Ollama's shift)."""
        cached = self._slots[seq]
        n_past = len(cached)
        keep = max(0, min(num_keep, n_past - 2))
        discard = (n_past - keep) // 2
        if not self._can_shift or discard <= 0:
            return False
        # In a unified cache a cell has one position for every sequence it belongs to, so the cells
        # that move must be this sequence's alone: a sequence that may share them (its tokens agree
        # past the part kept) lets go of them first, or, while it decodes, the shift does not happen.
        for other, tokens in enumerate(self._slots if self.kv_unified else ()):
            if other != seq and common_prefix(tokens, cached) > keep + discard:
                if other in self._busy:
                    return False
                self._forget_cache(other)
        lc = lib()
        lc.llama_memory_seq_rm(self._memory, seq, keep, keep + discard)
        lc.llama_memory_seq_add(self._memory, seq, keep + discard, n_past, -discard)
        del cached[keep : keep + discard]
        self._prompt_ends[seq] = None  # the cells moved: what they gave is not what they would give
        self._forget_checkpoints(seq)  # and the positions of what was saved are not theirs any more
        return True

    @property
    def vocab(self) -> Any:
        return self._vocab

    def cached_tokens(self, seq: int) -> int:
        """How many tokens sequence ``seq`` holds in the KV cache."""
        return len(self._slots[seq])

    def top_logprobs(self, index: LogitsSource, chosen: int, k: int) -> tuple[float, list[tuple[str, float]]]:
        logits = self._logits(index).astype(np.float64)
        peak = logits.max()
        logz = peak + math.log(float(np.exp(logits - peak).sum()))
        top: list[tuple[str, float]] = []
        if k > 0:
            best = np.argpartition(-logits, k)[:k]
            best = best[np.argsort(-logits[best])]
            top = [(self.piece(int(t)).decode("utf-8", "replace"), float(logits[t] - logz)) for t in best]
        return float(logits[chosen] - logz), top

    # -- generation -------------------------------------------------------------------------

    def serve(self, take: Callable[[int, bool], list[GenerationRequest] | None]) -> None:
        """Continuous batching: run every admitted request in one shared decode loop.

        Each step asks ``take(free_slots, idle)`` for newly arrived requests (``None`` means
        nothing is left and the loop may end; ``take`` decides that atomically with its own
        queue), puts their prompt chunks and one new token per generating sequence into a
        single batch, decodes it once and samples every sequence that got logits. With one
        request this is the plain generation loop; with several, llama.cpp evaluates them
        together, which is where the throughput gain comes from.
        """
        active: list[SequenceState] = []
        governor = self.governor
        if governor is not None:
            governor.begin()
        try:
            while True:
                self._busy = {s.seq for s in active}
                free = [i for i in range(self.n_parallel) if i not in self._busy]
                arrived = take(len(free), not active) if free else []
                if arrived is None:
                    return
                for request in arrived:
                    seq = self._admit(request, free)
                    if seq is not None:
                        active.append(seq)
                        free.remove(seq.seq)
                        self._busy.add(seq.seq)
                for s in active:
                    if s.cancel.is_set():
                        s.finish("cancel")
                active = [s for s in active if not s.finished]
                if active:
                    if governor is not None:
                        self._use_threads(governor.before_step())
                    self._step(active)
                    if governor is not None:
                        governor.after_step(self.threads)
                    active = [s for s in active if not s.finished]
        except BaseException as exc:
            self._forget_cache()  # an interrupted decode leaves the KV in an unknown state
            for s in active:
                s.fail(exc)
            raise

    def _admit(self, request: GenerationRequest, free: list[int]) -> SequenceState | None:
        job = None
        try:
            job = request.prepare(self)
            if job.media is not None:
                return self._admit_media(request, job, free)
            prompt = self._fit_prompt(list(job.prompt_tokens), job.num_keep)
            if not prompt:
                prompt = [self.bos_id if self.bos_id >= 0 else self.eos_id]
            slot = self._pick_slot(free, prompt)
            if job.reuse_cache:
                self._swap_in(slot, prompt)
            reused = self._prepare_prompt(slot, prompt, job.reuse_cache)
            state = SequenceState(self, slot, request, job, prompt, reused)
            if not state.todo:
                self._answer_from_prompt_end(state)
            return state
        except Exception as exc:  # noqa: BLE001 - this request's own fault (template, grammar): it alone fails
            request.done(exc)
            return None
        finally:
            if job is not None and job.media is not None:
                job.media.close()

    def _admit_media(self, request: GenerationRequest, job: Any, free: list[int]) -> SequenceState:
        """A prompt with images: its missing part is evaluated now, chunk by chunk (text in
        batches, each image through the vision encoder into embeddings), before the sequence
        joins the batch loop with its first token sampled. The cached prefix is reused as for
        text, never cutting an image in two."""
        media = job.media
        prompt = list(media.tokens)
        if len(prompt) >= self.n_ctx:
            raise InvalidRequest(f"the prompt with its images is {len(prompt)} tokens, more than num_ctx "
                                 f"({self.n_ctx}); raise num_ctx or send fewer images")
        reuse = job.reuse_cache and not self.projector.use_mrope  # M-RoPE positions are not one per token
        slot = self._pick_slot(free, prompt)
        if reuse:
            self._swap_in(slot, prompt, share=False)
        reused = media.safe_prefix(self._prepare_prompt(slot, prompt, reuse, whole=False))
        if not self._window_holds(slot, reused):  # cut back before an image, out of the window's reach
            self._forget_cache(slot)
            reused = 0
        cached = self._slots[slot]
        self._prompt_ends[slot] = None  # the encoder writes the rest of the cells its own way
        self._checkpoint_at[slot] = 0  # the encoder evaluates the rest, not the batch loop
        if reused < len(cached):
            lib().llama_memory_seq_rm(self._memory, slot, reused, -1)
            del cached[reused:]
            self.window_checkpoints.cut(slot, reused)
        state = SequenceState(self, slot, request, job, prompt, reused)
        state.decode_started_ns = time.perf_counter_ns()
        try:
            self.projector.evaluate(self._ctx, media, reused, slot, self.n_batch)
        except BaseException:
            self._forget_cache(slot)
            state.fail_quietly()
            raise
        cached.extend(prompt[reused:])
        state.todo = []
        state.accept(self._sample(state, -1), -1)
        return state

    def _answer_from_prompt_end(self, s: SequenceState) -> None:
        """A prompt whose every token is cached with its last one's logits kept: its first
        token is sampled now, from those logits, and it joins the batch loop generating."""
        end = self._prompt_ends[s.seq]
        if end is None or end.n_tokens != len(s.prompt):
            raise OllamaNbError("the prompt's kept logits went missing")  # _prepare_prompt's promise broken
        s.decode_started_ns = time.perf_counter_ns()
        try:
            s.accept(self._sample(s, end.row), end.row)
        except BaseException:
            s.fail_quietly()
            raise
        self._keep_end_window(s)

    def _keep_prompt_end(self, s: SequenceState, index: int) -> None:
        """After a prompt's first reply token: keep its last token's logits for the next time
        the same prompt comes, unless the sequence's cells no longer end with the prompt (the
        token shifted the context)."""
        cached = self._slots[s.seq]
        if len(cached) == len(s.prompt):
            self._prompt_ends[s.seq] = PromptEnd(len(cached), self._logits(index).copy())
            self._keep_end_window(s)

    def _keep_end_window(self, s: SequenceState) -> None:
        """While ``s`` holds its prompt and no reply token yet: keep the window of the prompt's
        end if the reply may overwrite ring cells that end attends to (a ring holds about
        n_swa + n_ubatch cells). The same prompt again (a regenerated reply), or the next turn
        of a chat whose template leaves this reply's thinking out, then goes on from there
        instead of evaluating everything again; llama-server takes its checkpoints near every
        prompt's end for this. A reply capped short of that never pays for the copy."""
        end = len(s.prompt)
        room = s.job.num_predict if s.job.num_predict >= 0 else self.n_ctx
        if (self._ring and not s.finished and end >= MIN_CHECKPOINT and len(self._slots[s.seq]) == end
                and end + room > max(end - self.n_swa, 0) + self.n_swa + self.n_ubatch
                and not self.window_checkpoints.has(s.seq, end)):
            self._save_checkpoint(s.seq)

    def _logits(self, source: LogitsSource) -> np.ndarray:
        """The logits row of the batch row ``source`` (a view, valid until the next decode), or
        the kept row itself; views are made once per row address (``_logit_rows``)."""
        if isinstance(source, np.ndarray):
            return source
        pointer = lib().llama_get_logits_ith(self._ctx, source)
        address = ctypes.addressof(pointer.contents)
        row = self._logit_rows.get(address)
        if row is None:
            if len(self._logit_rows) >= self.n_batch:
                # a step has at most n_batch output rows: more addresses than that mean
                # llama.cpp has replaced its output buffer, and the old rows are gone
                self._logit_rows.clear()
            row = self._logit_rows[address] = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        return row

    def _step(self, active: list[SequenceState]) -> None:
        """One batch: a token for every generating sequence, then prompt chunks up to n_batch."""
        lc = lib()
        batch = self._batch.batch
        n = 0
        active = sorted(active, key=lambda s: s.seq)  # across streams, one decode per run of consecutive ids
        for s in active:
            if s.next_token is not None:
                cached = self._slots[s.seq]
                s.draft = self._draft_for(s, n)
                s.logits_at = n
                n = _put(batch, n, (s.next_token, *s.draft), len(cached), s.seq, logits=True)
                cached.append(s.next_token)
                cached.extend(s.draft)
                s.next_token = None
        generation_tokens = n
        for s in active:
            if not s.todo or n >= self.n_batch:
                continue
            if s.decode_started_ns is None:
                s.decode_started_ns = time.perf_counter_ns()
            cached = self._slots[s.seq]
            chunk = s.todo[: self.n_batch - n]
            if self._checkpoint_at[s.seq] > len(cached):  # stop there, to keep the window's cells
                chunk = chunk[: self._checkpoint_at[s.seq] - len(cached)]
            del s.todo[: len(chunk)]
            n = _put(batch, n, chunk, len(cached), s.seq, logits=False)
            cached.extend(chunk)
            if not s.todo:
                batch.logits[n - 1] = True
                s.logits_at = n - 1
        batch.n_tokens = n
        only_tokens = n == generation_tokens  # no prompt chunk in this batch: its time is the tokens'
        started = time.perf_counter_ns()
        rc = lc.llama_decode(self._ctx, batch)
        if rc != 0:
            raise OllamaNbError(f"llama_decode failed with code {rc}")
        for s in active:
            if 0 < self._checkpoint_at[s.seq] == len(self._slots[s.seq]):
                self._checkpoint_at[s.seq] = 0
                self._save_checkpoint(s.seq)
        produced = 0
        drafters: list[tuple[SequenceState, bool]] = []  # sequences that may draft, and whether they did
        for s in active:
            if s.logits_at >= 0:
                index, s.logits_at = s.logits_at, -1
                if s.drafter is not None:
                    drafters.append((s, bool(s.draft)))
                if s.draft:
                    produced += self._verify(s, index)
                else:
                    prompt_end = s.first_token_ns is None
                    s.accept(self._sample(s, index), index)
                    if prompt_end:
                        self._keep_prompt_end(s, index)
                    produced += 1
        if only_tokens and drafters:
            elapsed = time.perf_counter_ns() - started
            for s, drafted in drafters:
                s.drafter.timed(drafted, produced, elapsed)

    def _sample(self, s: SequenceState, index: LogitsSource) -> int:
        """The token ``s`` samples from the logits of batch row ``index`` (or a kept row), with
        its repeat penalty applied to the row for the moment (``runtime.penalties``): llama.cpp's
        row gets its values back, a kept row is not changed but copied."""
        penalty = s.penalty
        if penalty is None:
            return self._sample_from(s, index)
        row = self._logits(index)
        tokens = penalty.tokens()
        original = row[tokens]
        if isinstance(index, np.ndarray):
            row = index = row.copy()
        row[tokens] = penalty.penalized(original)
        try:
            token = self._sample_from(s, index)
        finally:
            row[tokens] = original
        penalty.accept(token)
        return token

    def _sample_from(self, s: SequenceState, index: LogitsSource) -> int:
        """The first largest logit when the chain of ``s`` is greedy alone (exactly what that
        chain picks), else the chain's token."""
        if s.argmax:
            return int(self._logits(index).argmax())
        if isinstance(index, np.ndarray):
            return sample_row(s.chain, index)
        return lib().llama_sampler_sample(s.chain, self._ctx, index)

    def _draft_for(self, s: SequenceState, batch_used: int) -> list[int]:
        """The tokens to guess after ``s.next_token`` this step: no more than the batch, the
        context (a guess must never need a context shift) and num_predict have room for."""
        if s.drafter is None:
            return []
        room = min(
            self.n_batch - batch_used - 1,
            self.n_ctx - len(self._slots[s.seq]) - 2,
            (s.job.num_predict - len(s.generated) - 1) if s.job.num_predict >= 0 else self.n_batch,
        )
        return s.drafter.draft(room) if room > 0 else []

    def _verify(self, s: SequenceState, index: int) -> int:
        """Sample position by position while the model agrees with the draft, exactly as one
        token at a time would (the chain samples each position after accepting the one before);
        drop the refused guesses from the KV cache; then hand the tokens on in order. Returns
        how many tokens the step gave."""
        lc = lib()
        draft = s.draft
        s.draft = []
        sampled = [self._sample(s, index)]
        while len(sampled) <= len(draft) and sampled[-1] == draft[len(sampled) - 1] and not self.is_eog(sampled[-1]):
            sampled.append(self._sample(s, index + len(sampled)))
        agreed = len(sampled) - 1  # guesses the model confirmed: their KV entries stay
        s.drafter.feedback(len(draft), agreed)
        refused = len(draft) - agreed
        if refused:
            cached = self._slots[s.seq]
            keep = len(cached) - refused
            lc.llama_memory_seq_rm(self._memory, s.seq, keep, -1)
            del cached[keep:]
        # every token but the last is in the cache already; accept leaves the last as next_token
        for i, token in enumerate(sampled):
            s.accept(token, index + i)
            if s.finished:
                break
        return len(sampled)

    # -- embeddings -------------------------------------------------------------------------

    def embed(
        self, texts: Sequence[str], *, truncate: bool = True, normalize: bool = True
    ) -> tuple[list[list[float]], int]:
        """One pooled vector per text, L2-normalised unless the legacy API asks for the raw one
        (needs ``LoadParams.embedding``)."""
        import numpy as np

        if not self.params.embedding:
            raise OllamaNbError("model was not loaded for embeddings")
        lc = lib()
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
            vectors.append((vec / norm if normalize and norm > 0 else vec).tolist())
        self._forget_cache()
        return vectors, total_tokens

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.projector is not None:
                self.projector.close()
            self._llm.close()


def _put(batch: Any, n: int, tokens: Sequence[int], pos: int, seq: int, *, logits: bool) -> int:
    """Write ``tokens`` of sequence ``seq`` at positions from ``pos`` into the batch from slot
    ``n``; return the next free slot."""
    for i, tok in enumerate(tokens):
        batch.token[n] = tok
        batch.pos[n] = pos + i
        batch.seq_id[n][0] = seq
        batch.n_seq_id[n] = 1
        batch.logits[n] = logits
        n += 1
    return n
