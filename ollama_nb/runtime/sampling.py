"""Sampling and stop strings: the per-token decisions of one request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..base.errors import InvalidRequest
from .jobs import GenerationJob, SamplingParams
from .library import lib
from .penalties import RepeatPenalty, handled_here


def build_sampler(job: GenerationJob, *, vocab: Any, n_vocab: int, n_ctx: int) -> Any:
    """One C sampler chain per request, in the order Ollama applies its options (penalties over
    the prompt too, then the grammar, then greedy, mirostat or top-k/typical/top-p/min-p/temp).
    A repeat penalty alone is not in it: ``repeat_penalty`` applies that before the chain."""
    lc = lib()
    s = job.sampling
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    add = lambda smpl: lc.llama_sampler_chain_add(chain, smpl)  # noqa: E731
    if _penalized(s) and not handled_here(s):
        last_n = _window(s, n_ctx)
        penalties = lc.llama_sampler_init_penalties(
            n_vocab, last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
        )
        for tok in job.prompt_tokens[-last_n:]:
            lc.llama_sampler_accept(penalties, tok)
        add(penalties)
    if job.grammar:
        grammar = lc.llama_sampler_init_grammar(vocab, job.grammar.encode(), b"root")
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
        add(lc.llama_sampler_init_mirostat(n_vocab, seed, s.mirostat_tau, s.mirostat_eta, 100))
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


def is_plain_greedy(job: GenerationJob) -> bool:
    """Whether the chain ``build_sampler`` makes for ``job`` is greedy alone (temperature 0, no
    grammar, no penalties but a repeat penalty applied before it): then the sampled token is the
    first largest logit, which the engine reads straight off llama.cpp's logits instead of
    handing the chain the whole vocabulary (for gemma3's 262,144 tokens the chain builds and
    scans a 3 MiB candidate array per token)."""
    s = job.sampling
    return s.temperature <= 0 and (not _penalized(s) or handled_here(s)) and not job.grammar


def repeat_penalty(job: GenerationJob, n_ctx: int) -> RepeatPenalty | None:
    """The repeat penalty the engine applies before the chain (``runtime.penalties``), over the
    prompt's last tokens to begin with, as the chain's penalties sampler would be."""
    s = job.sampling
    if not handled_here(s):
        return None
    last_n = _window(s, n_ctx)
    return RepeatPenalty(s.repeat_penalty, last_n, job.prompt_tokens[-last_n:])


def _window(s: SamplingParams, n_ctx: int) -> int:
    return n_ctx if s.repeat_last_n < 0 else s.repeat_last_n


def _penalized(s: SamplingParams) -> bool:
    """Whether the chain starts with llama.cpp's penalties sampler: a window that holds tokens
    (``repeat_last_n`` -1 is the whole context) and a penalty that is not neutral."""
    return s.repeat_last_n != 0 and (s.repeat_penalty != 1.0 or bool(s.presence_penalty) or bool(s.frequency_penalty))


def first_stop(text: str, stops: Sequence[str]) -> int:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def stop_prefix_len(text: str, stops: Sequence[str], max_stop: int) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string."""
    for n in range(min(len(text), max_stop - 1), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0
