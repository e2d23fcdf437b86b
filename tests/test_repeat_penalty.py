"""The repeat penalty applied to the tokens it touches (``runtime.penalties``) instead of by
llama.cpp's penalties sampler, which looks up every token of the vocabulary: the same tokens,
greedy and seeded, on both models, for a prompt evaluated and for one answered from its kept
logits, with the log-probabilities still the model's own."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
from ollama_nb.runtime import sampling
from ollama_nb.runtime.jobs import SamplingParams
from ollama_nb.runtime.penalties import RepeatPenalty, handled_here

from .conftest import GEMMA, SMOLLM

PROMPT = "List ten colours, one a line, then ten animals, one a line, then ten colours again."
CASES = {
    "greedy": {"temperature": 0, "repeat_penalty": 1.3},
    "ollama sampling": {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 7, "repeat_penalty": 1.1},
    "below one, short window": {"temperature": 0.7, "seed": 3, "repeat_penalty": 0.85, "repeat_last_n": 8},
    "whole context": {"temperature": 0, "repeat_penalty": 1.2, "repeat_last_n": -1},
}


def test_only_the_repeat_penalty_alone_is_handled_here() -> None:
    assert handled_here(SamplingParams(repeat_penalty=1.1))
    assert not handled_here(SamplingParams(repeat_penalty=1.0))
    assert not handled_here(SamplingParams(repeat_penalty=1.1, repeat_last_n=0))
    assert not handled_here(SamplingParams(repeat_penalty=1.1, presence_penalty=0.3))
    assert not handled_here(SamplingParams(repeat_penalty=1.1, frequency_penalty=0.3))


def test_the_window_counts_the_last_tokens_as_they_come() -> None:
    history = [5, 1, 5, 2, 5, 3, 3, 9]
    penalty = RepeatPenalty(1.5, 4, history)
    for token in (3, 7, 5, 5, 1):
        penalty.accept(token)
        history.append(token)
        assert Counter(penalty.tokens().tolist()) == Counter(set(history[-4:]))
    logits = np.array([-2.0, 0.0, 3.0], dtype=np.float32)
    assert penalty.penalized(logits).tolist() == [-3.0, 0.0, 2.0]


def run(models: Path, name: str, options: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """The reply and its log-probabilities, twice: the second time the same prompt is answered
    from its kept logits."""
    m = ModelManager(Store(models))
    try:
        out = []
        for _ in range(2):
            r = m.generate(model=name, prompt=PROMPT, stream=False, logprobs=True,
                           options={**options, "num_predict": 64, "num_thread": 2})
            out.append((r.response, [lp.logprob for lp in r.logprobs]))
        return out
    finally:
        m.close()


@pytest.mark.parametrize("name", [SMOLLM, GEMMA])
def test_the_same_tokens_as_llama_cpps_penalties_sampler(shared_models: Path, name: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    here = {case: run(shared_models, name, options) for case, options in CASES.items()}
    unpenalized = run(shared_models, name, {**CASES["greedy"], "repeat_penalty": 1.0})
    monkeypatch.setattr(sampling, "handled_here", lambda s: False)  # llama.cpp's sampler, every token
    chained = {case: run(shared_models, name, options) for case, options in CASES.items()}
    for case in CASES:
        assert here[case] == chained[case], case  # texts and log-probabilities, both requests
        assert all(len(text) > 40 for text, _ in here[case])
    assert here["greedy"][0][0] != unpenalized[0][0]  # the penalty does change the reply
