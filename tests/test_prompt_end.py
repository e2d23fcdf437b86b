"""A prompt sent again in full answers from the logits its last token gave the first time
(``runtime.prompt_end``) on the real engine: the same reply as the first run, greedy or seeded,
and no decode before its first token; and the kept row follows the cells
it came from (shared with another sequence, saved in RAM with them) and is dropped with them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ollama_nb.runtime.engine as engine_module
from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store

from .conftest import SMOLLM


def code_cell(lines: int) -> str:
    body = "".join(f"    x{i} = compute({i}, {i * 3 % 7}) + x{max(i - 1, 0)}\n" for i in range(lines))
    return "def f():\n" + body + "\n# Explain the function above in one paragraph:\n"


# The prompt batch scores its last token on another attention path than a one-token batch does
# (tiled for 64 rows and more; split across threads past 256 cells): scored again alone, the
# last token of each of these gave other logits, and the greedy reply changed on the second run
# (it did before the kept row; the third run then agreed with the second).
AGAIN = {"155 tokens": code_cell(10), "834 tokens": code_cell(50)}
SHORT = "The keeper climbed the stairs and lit the lamp again. Then the storm came, and"
GREEDY = {"temperature": 0, "num_predict": 48, "num_thread": 2}
SEEDED = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 7, "num_predict": 24, "num_thread": 2}


class CountingLibrary:
    """llama_cpp with its decode calls counted (the engine reaches llama.cpp through ``lib()``)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.decodes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def llama_decode(self, ctx: Any, batch: Any) -> int:
        self.decodes += 1
        return self.real.llama_decode(ctx, batch)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> CountingLibrary:
    library = CountingLibrary(engine_module.lib())
    monkeypatch.setattr(engine_module, "lib", lambda: library)
    return library


@pytest.fixture
def fresh(shared_models: Path) -> Iterator[ModelManager]:
    """A manager of its own: the model loads with empty cells and no kept rows."""
    m = ModelManager(Store(shared_models))
    yield m
    m.close()


def generate(m: ModelManager, prompt: str, options: dict[str, Any], **extra: Any) -> Any:
    return m.generate(model=SMOLLM, prompt=prompt, raw=True, stream=False, options=options, **extra)


def engine_of(m: ModelManager) -> Any:
    (runner,) = m.scheduler._runners.values()
    return runner.engine


@pytest.mark.parametrize("prompt", AGAIN.values(), ids=AGAIN.keys())
def test_the_prompt_again_gives_the_first_greedy_reply(fresh: ModelManager, prompt: str) -> None:
    first = generate(fresh, prompt, GREEDY)
    again = generate(fresh, prompt, GREEDY)
    assert first.prompt_eval_count > 150
    assert again.response == first.response and again.eval_count == first.eval_count
    assert again.prompt_eval_count == 1  # counted as Ollama counts it: the last token


def test_the_prompt_again_needs_no_decode_before_its_first_token(fresh: ModelManager, counted: CountingLibrary) -> None:
    first = generate(fresh, SHORT, {**GREEDY, "num_predict": 1})
    assert counted.decodes == 1 and first.eval_count == 1
    again = generate(fresh, SHORT, {**GREEDY, "num_predict": 1})
    assert counted.decodes == 1  # the first token came from the kept row
    assert again.response == first.response


def test_a_seeded_reply_again_is_the_same_reply(fresh: ModelManager) -> None:
    first = generate(fresh, SHORT, SEEDED)
    again = generate(fresh, SHORT, SEEDED)
    other_seed = generate(fresh, SHORT, {**SEEDED, "seed": 8})
    assert again.response == first.response  # the chain sampled the kept row as it samples llama.cpp's
    assert other_seed.response != first.response  # and the seed does reach it


def test_logprobs_of_the_first_token_come_from_the_kept_row(fresh: ModelManager) -> None:
    first = generate(fresh, SHORT, {**GREEDY, "num_predict": 3}, logprobs=True, top_logprobs=3)
    again = generate(fresh, SHORT, {**GREEDY, "num_predict": 3}, logprobs=True, top_logprobs=3)
    assert again.logprobs[0].model_dump() == first.logprobs[0].model_dump()
    assert [t.token for t in again.logprobs[0].top_logprobs] != []


def test_another_sequence_shares_the_row_with_the_cells(
    shared_models: Path, monkeypatch: pytest.MonkeyPatch, counted: CountingLibrary
) -> None:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")
    m = ModelManager(Store(shared_models))
    try:
        two = {**GREEDY, "num_predict": 2}
        prompt = AGAIN["155 tokens"]
        first = generate(m, prompt, two)
        assert counted.decodes == 2  # the prompt, then the first reply token
        again = generate(m, prompt, two)  # sequence 0 holds prompt and reply: it goes to sequence 1
        assert engine_of(m)._slots[1]  # which started from sequence 0's cells of the prompt
        assert counted.decodes == 3  # and from its kept row: only the first reply token was decoded
        assert again.response == first.response
    finally:
        m.close()


def test_the_row_is_saved_and_restored_with_its_cells(fresh: ModelManager, counted: CountingLibrary) -> None:
    other = "A recipe for bread needs flour, water, salt and time; knead it and let it rise. " * 3
    first = generate(fresh, AGAIN["834 tokens"], {**GREEDY, "num_predict": 1})
    generate(fresh, other, {**GREEDY, "num_predict": 1})  # takes the one sequence: the code cell goes to RAM
    assert len(engine_of(fresh).prompt_cache) == 1
    decodes = counted.decodes
    again = generate(fresh, AGAIN["834 tokens"], {**GREEDY, "num_predict": 1})
    assert counted.decodes == decodes  # restored with its kept row: nothing evaluated
    assert again.response == first.response


def test_a_shifted_context_drops_the_row_and_scores_the_prompt_again(
    fresh: ModelManager, counted: CountingLibrary
) -> None:
    small = {**GREEDY, "num_ctx": 64, "num_predict": 80}  # the reply outgrows the context: it shifts
    first = generate(fresh, SHORT, small)
    assert first.eval_count == 80
    engine = engine_of(fresh)
    assert all(end is None for end in engine._prompt_ends)  # the cells moved: the row no longer holds
    decodes = counted.decodes
    again = generate(fresh, SHORT, small)
    assert counted.decodes - decodes == decodes  # the prompt was evaluated as the first time
    assert again.response == first.response


def test_a_long_text_tokenized_again_gets_the_same_tokens_from_its_kept_copy(fresh: ModelManager,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    generate(fresh, "Hello", {"num_predict": 1})
    engine = engine_of(fresh)
    texts = [code_cell(80 + i) for i in range(6)]  # thousands of characters each
    first = [engine.tokenize(text) for text in texts]
    assert all(len(tokens) > 300 for tokens in first)
    first[-1].append(-1)  # a caller's list is its own
    calls = []
    real = engine._model.tokenize
    monkeypatch.setattr(engine._model, "tokenize", lambda *a: calls.append(a) or real(*a))
    again = [engine.tokenize(text) for text in texts[-4:]]
    assert calls == []  # the last four came from their kept tokens
    assert again == [*first[2:5], first[5][:-1]]
    assert engine.tokenize(texts[0]) == first[0] and len(calls) == 1  # the oldest were let go
    special = texts[1] + "<|im_end|>"  # one token parsed as special, several as text
    assert len(engine.tokenize(special, parse_special=True)) < len(engine.tokenize(special, parse_special=False))
