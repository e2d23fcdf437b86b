"""Sequences sharing the cells of a common prefix (``OLLAMA_NUM_PARALLEL`` > 1), on the real
engine, with a stream of cells per sequence (copied from one to the other) and in one unified
pool (the same cells, held by both): a prompt that starts like another sequence's conversation
evaluates only what differs, gets the reply it gets on a fresh model, and leaves the other
conversation whole.

The context is 2 x 128 cells, so the attention window stays below the 512 cells past which
llama.cpp's CPU flash attention sums in other chunks; within it the replies must be identical
bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store

from .conftest import SMOLLM

STORY = "".join(f"Line {i}: the keeper climbed the stairs and lit the lamp again.\n" for i in range(4))
NEXT = STORY + "Then the storm came, and"
BRANCH = STORY + "In the morning the keeper"
GREEDY = {"temperature": 0, "num_predict": 12, "num_thread": 2, "num_ctx": 128}


def run(models: Path, prompts: list[str]) -> list[tuple[str, int]]:
    """(reply, prompt tokens evaluated) for each of ``prompts``, in turn, on a freshly loaded model."""
    m = ModelManager(Store(models))
    try:
        replies = []
        for prompt in prompts:
            r = m.generate(model=SMOLLM, prompt=prompt, raw=True, stream=False, options=GREEDY)
            replies.append((r.response, r.prompt_eval_count))
        return replies
    finally:
        m.close()


@pytest.fixture(autouse=True)
def _two_sequences_and_no_ram_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")
    monkeypatch.setenv("OLLAMA_NB_PROMPT_CACHE_MB", "0")  # only the cells can keep a conversation


@pytest.fixture(params=["streams", "unified"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OLLAMA_NB_KV_UNIFIED", "1" if request.param == "unified" else "0")
    return request.param


def test_a_branch_shares_the_prefix_and_the_first_conversation_stays_whole(shared_models: Path, layout: str) -> None:
    story, branch, again = run(shared_models, [NEXT, BRANCH, NEXT])
    branch_alone = run(shared_models, [BRANCH])[0]
    assert story[1] > 50
    assert branch[1] < 20  # the story's cells now belong to both sequences
    assert branch[0] == branch_alone[0]
    assert again[1] <= 2  # the first sequence still holds the whole story and its reply
    assert again[0] == story[0]


def test_without_a_second_sequence_nothing_is_shared(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "1")
    _, branch, again = run(shared_models, [NEXT, BRANCH, NEXT])
    assert branch[1] < 20  # the one sequence is cut back to the story
    assert again[1] > 5  # and the first ending is gone from it


def test_a_context_shift_never_moves_cells_another_sequence_shares(shared_models: Path, layout: str) -> None:
    m = ModelManager(Store(shared_models))
    options = {**GREEDY, "num_predict": 40}
    try:
        first = m.generate(model=SMOLLM, prompt="Tell me a long story about a lighthouse keeper.", stream=False,
                           options=options)
        history = list(first.context)
        assert len(history) == 80
        # The second conversation branches off 70 tokens into the first one, so it shares those
        # cells, and then outgrows its 128 cells: its context shift moves the cells after the
        # ones it keeps, four of which the first conversation holds too.
        branch = m.generate(model=SMOLLM, prompt="Now tell it again, at length.", context=history[:70],
                            stream=False, options={**GREEDY, "num_predict": 100})
        prompt_length = len(branch.context) - branch.eval_count
        assert prompt_length - branch.prompt_eval_count >= 70  # it did start from the shared cells
        assert prompt_length + branch.eval_count > 128  # and it did shift
        # The first conversation's next turn. In one pool its cells were given up before the
        # shift, so it is evaluated afresh rather than read from cells whose positions moved under
        # it; in its own stream it held copies, which nothing moved.
        resumed = m.generate(model=SMOLLM, prompt="And then?", context=history, stream=False, options=GREEDY)
        if layout == "unified":
            assert resumed.prompt_eval_count > 80
        else:
            assert resumed.prompt_eval_count < 40
        assert resumed.response.strip()
    finally:
        m.close()
