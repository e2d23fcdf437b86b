"""What goes into and comes out of a generation: plain data, no llama.cpp."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class ModelView(Protocol):
    """What building a job may ask of the loaded model (on its worker thread): its vocabulary
    and the parameters it was loaded with. The engine is one; nothing here names it."""

    n_vocab: int
    bos_id: int
    eos_id: int
    bos_text: str
    eos_text: str
    add_bos: bool

    @property
    def params(self) -> LoadParams: ...

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def fim_tokens(self) -> tuple[int, int, int] | None: ...

    @property
    def media_marker(self) -> str | None: ...  # what stands for an image in a prompt; None: text-only

    def media_prompt(self, text: str, images: Sequence[bytes]) -> Any: ...  # a runtime.vision.MediaPrompt


@dataclass(frozen=True)
class LoadParams:
    """Everything that fixes a llama.cpp context; a change means a reload (Ollama's rule)."""

    num_ctx: int = 4096
    num_batch: int = 512
    num_gpu_layers: int = 0
    main_gpu: int = 0
    num_thread: int = 0  # 0: follow the machine (runtime.threads); any other value is fixed
    use_mmap: bool | None = None  # None: read into memory on the CPU for huge pages (runtime.huge_pages)
    flash_attention: bool = False
    kv_cache_type: int = 1  # ggml type of the K and V cache: 1 f16, 8 q8_0, 2 q4_0
    adapters: tuple[str, ...] = ()
    embedding: bool = False
    pooling_type: int = 1  # for embeddings: the GGUF's own, else mean (1), as Ollama does
    num_parallel: int = 1  # sequences decoded together (OLLAMA_NUM_PARALLEL); each gets num_ctx
    kv_unified: bool = False  # one pool of cells for all sequences, not a stream each (OLLAMA_NB_KV_UNIFIED)
    swa_full: bool | None = None  # a full-size cache for sliding-window layers; None: only when kv_unified
    lazy_memory: bool = True  # release the zeroed KV cache until tokens fill it (runtime.memory)
    prompt_cache_mb: int = 256  # overwritten sequences saved in RAM for their next turn (runtime.prompt_cache)
    extra_buffers: bool | None = None  # CPU extra buffer types (AMX, repacking); None: the probe decides
    projector: str | None = None  # a vision projector (mmproj GGUF) loaded beside the model


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
    draft: int = 0  # most tokens drafted per step from the text itself (runtime.drafting); 0: off
    media: Any = None  # a runtime.vision.MediaPrompt when the prompt holds images (its tokens are prompt_tokens)


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
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    cached_tokens: int
    first_token_ns: int | None = None


@dataclass
class GenerationRequest:
    """A request waiting for a sequence: how to build its job (on the worker, where tokenizing
    is safe), where its text goes, its cancel flag, and whom to tell when it ends."""

    prepare: Callable[[ModelView], GenerationJob]
    emit: Callable[[TokenPiece], None]
    cancel: threading.Event
    done: Callable[[GenerationResult | BaseException], None]
