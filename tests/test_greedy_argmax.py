"""Greedy sampling read straight off the logits (``runtime.sampling.is_plain_greedy``): which
requests take that path, and that it picks exactly the tokens the C greedy chain picks, on both
models (gemma3's vocabulary is 262,144 tokens, SmolLM2's 49,152)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
from ollama_nb.runtime import sequence
from ollama_nb.runtime.jobs import GenerationJob, SamplingParams
from ollama_nb.runtime.sampling import is_plain_greedy

from .conftest import GEMMA, SMOLLM

PROMPT = "Write a short poem about the sea, then list three facts about whales."


def job(**sampling: float) -> GenerationJob:
    return GenerationJob(prompt_tokens=[1, 2, 3], sampling=SamplingParams(**sampling))


def test_only_greedy_alone_skips_the_chain() -> None:
    assert is_plain_greedy(job(temperature=0))
    assert not is_plain_greedy(job(temperature=0.8))
    assert is_plain_greedy(job(temperature=0, repeat_penalty=1.1))  # applied to the row first (runtime.penalties)
    assert not is_plain_greedy(job(temperature=0, presence_penalty=0.5))  # llama.cpp's penalties sampler
    assert not is_plain_greedy(job(temperature=0, repeat_penalty=1.1, frequency_penalty=0.2))
    assert is_plain_greedy(job(temperature=0, repeat_penalty=1.1, repeat_last_n=0))  # a window of nothing
    grammar = job(temperature=0)
    grammar.grammar = 'root ::= "yes" | "no"'
    assert not is_plain_greedy(grammar)


def replies(models: Path) -> list[str]:
    m = ModelManager(Store(models))
    try:
        return [m.generate(model=name, prompt=PROMPT, stream=False,
                           options={"temperature": 0, "num_predict": 96, "num_thread": 2}).response
                for name in (SMOLLM, GEMMA)]
    finally:
        m.close()


def test_the_logits_argmax_is_the_greedy_chains_token(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = replies(shared_models)
    monkeypatch.setattr(sequence, "is_plain_greedy", lambda job: False)  # every token through the C chain
    chained = replies(shared_models)
    assert all(len(text) > 100 for text in fast)
    assert fast == chained
