"""Conversations saved in RAM when another request takes their KV sequence: the pure cache, and
the real engine restoring a turn's history instead of evaluating it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
from ollama_nb.runtime.prompt_cache import MIN_TOKENS, PromptCache

from .conftest import SMOLLM

# ---- the cache ----------------------------------------------------------------------------


def test_the_longest_shared_prefix_wins_and_must_beat_what_the_sequence_holds() -> None:
    cache = PromptCache(limit_bytes=1000)
    cache.save(list(range(40)), b"a" * 10)
    cache.save([7] * 40, b"b" * 10)
    state, common = cache.best(list(range(30)) + [99], better_than=0)
    assert (state.data, common) == (b"a" * 10, 30)
    assert cache.best(list(range(30)), better_than=30) is None  # the live sequence already has as much


def test_a_state_covers_the_saved_prefixes_of_itself_and_the_oldest_go_first() -> None:
    cache = PromptCache(limit_bytes=25)
    cache.save(list(range(40)), b"a" * 10)
    cache.save(list(range(50)), b"b" * 10)  # the same conversation, further on: replaces the first
    assert len(cache) == 1 and cache.size_bytes == 10
    cache.save([5] * 40, b"c" * 10)
    cache.save([6] * 40, b"d" * 10)  # over the limit: the least recently used goes
    assert len(cache) == 2 and cache.best(list(range(50)), better_than=0) is None
    assert not cache.worth_saving([6] * 40)  # saved as it is already
    assert not cache.worth_saving([1] * (MIN_TOKENS - 1))  # too short to be worth it
    assert not PromptCache(0).worth_saving([1] * 100)  # turned off


# ---- the engine ---------------------------------------------------------------------------

STORY = "".join(f"Line {i}: the keeper climbed the stairs and lit the lamp again.\n" for i in range(12))
OTHER = "".join(f"Note {i}: a recipe for bread needs flour, water, salt and time.\n" for i in range(12))
NEXT = STORY + "Then the storm came, and"
GREEDY = {"temperature": 0, "num_predict": 12, "num_thread": 2}


def run(models: Path, prompts: list[str]) -> tuple[str, int]:
    """The reply to, and the prompt tokens evaluated for, the last of ``prompts`` run in turn on a
    freshly loaded model with one KV sequence."""
    m = ModelManager(Store(models))
    try:
        for prompt in prompts[:-1]:
            m.generate(model=SMOLLM, prompt=prompt, raw=True, stream=False, options=GREEDY)
        r = m.generate(model=SMOLLM, prompt=prompts[-1], raw=True, stream=False, options=GREEDY)
        return r.response, r.prompt_eval_count
    finally:
        m.close()


def test_a_conversation_interrupted_by_another_resumes_from_ram(shared_models, monkeypatch) -> None:
    kept = run(shared_models, [STORY, NEXT])  # the sequence still held the story
    restored = run(shared_models, [STORY, OTHER, NEXT])  # another prompt took the sequence between
    monkeypatch.setenv("OLLAMA_NB_PROMPT_CACHE_MB", "0")
    evaluated = run(shared_models, [STORY, OTHER, NEXT])  # the same, with the cache off
    assert kept[1] < 20  # only the new words were evaluated
    assert restored == kept  # the same reply, from the same few tokens evaluated
    assert evaluated[1] > 150  # without the cache the whole story was evaluated again


def test_the_same_prompt_again_cuts_the_reply_off_without_saving_it(shared_models) -> None:
    m = ModelManager(Store(shared_models))
    try:
        for prompt in (STORY, STORY):  # the second keeps the story and replaces only the reply
            m.generate(model=SMOLLM, prompt=prompt, raw=True, stream=False, options=GREEDY)
        (runner,) = m.scheduler._runners.values()
        assert len(runner.engine.prompt_cache) == 0  # no copy on that request's first token
        m.generate(model=SMOLLM, prompt=OTHER, raw=True, stream=False, options=GREEDY)
        assert len(runner.engine.prompt_cache) == 1  # another conversation: the story is saved
    finally:
        m.close()


@pytest.fixture
def tiny_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_NB_PROMPT_CACHE_MB", "1")  # smaller than the story's KV (~23 KB a token)


def test_a_state_larger_than_the_cache_is_not_kept(shared_models, tiny_cache) -> None:
    _, evaluated = run(shared_models, [STORY, OTHER, NEXT])
    assert evaluated > 150
