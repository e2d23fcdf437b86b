"""Speculative decoding from the prompt (``draft_num_predict``): the drafter's guesses, and
replies that are exactly those of decoding one token at a time, greedy and seeded, alone,
batched with other requests and after a reused prefix.

Both sides of a comparison start from a fresh context, and the prompts stay short (under 256
cached tokens): there llama.cpp computes a one-token step and a many-token batch with the same
kernels, bit for bit, so any difference would be ours. (Past
512 cached tokens its flash attention splits a one-token step's KV over threads, a batch's not,
and a near-tie may then go the other way; that is why drafting is off by default.)
"""

from __future__ import annotations

import threading

import pytest

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
from ollama_nb.runtime import drafting
from ollama_nb.runtime.drafting import PromptLookup

from .conftest import SMOLLM

CODE = "\n".join(f"def f{i}(x):\n    return x * {i}" for i in range(6))
EDIT = f"Repeat this code exactly, but rename f3 to g3:\n```python\n{CODE}\n```"
GREEDY = {"temperature": 0, "num_predict": 90}


# ---- the drafter ------------------------------------------------------------------------


def test_a_draft_continues_the_latest_earlier_occurrence_of_the_longest_match() -> None:
    lookup = PromptLookup([1, 2, 3, 4, 9, 1, 2, 3, 5, 6, 7], max_draft=3)
    for t in (1, 2, 3):
        lookup.append(t)
    assert lookup.draft(10) == [5, 6, 7]  # "1 2 3" last came before "5 6 7", not before "4 9"
    lookup.append(4)  # "... 1 2 3 4": only the first occurrence goes on with 4
    assert lookup.draft(10) == [9, 1, 2]
    assert lookup.draft(1) == [9]  # never more than the room it is given


def test_a_copy_is_followed_where_it_is_not_where_its_last_words_occurred_last() -> None:
    body = list(range(20, 33))  # longer than the longest n-gram: only the place tells them apart
    prompt = [5, *body, 10, 6, *body, 11, 0]
    lookup = PromptLookup(prompt, max_draft=64)
    for token in [5, *body, 10, 6, *body]:  # the reply copies the prompt, drafting as it goes
        lookup.draft(64)
        lookup.append(token)
    # the latest earlier occurrence of the body is the reply's own first one, followed by 10;
    # the place being copied goes on with 11
    assert lookup.draft(2) == [11, 0]
    lookup.append(12)  # the reply leaves the copy: the index is asked again; nothing followed "32 12"
    assert lookup.draft(2) == []


def test_no_draft_without_a_match_of_two_tokens() -> None:
    lookup = PromptLookup([1, 2, 3, 4], max_draft=4)
    lookup.append(3)  # "4 3" never occurred; a single 3 did, which is too weak to go on
    assert lookup.draft(4) == []


def test_the_draft_length_adapts_and_refusals_pause_drafting() -> None:
    lookup = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2], max_draft=8)
    assert lookup.draft(8) == [3, 4, 5, 6, 7, 8, 9, 1]  # what followed "1 2" the last time
    lookup.feedback(8, 3)  # cut short: half the length next time
    assert lookup.length == 4
    lookup.feedback(4, 0)  # refused at once: the next step drafts nothing
    assert lookup.draft(8) == []
    assert lookup.draft(8) == [3, 4]  # the pause is over; length halved again, to 2
    lookup.feedback(2, 0)
    assert [lookup.draft(8) for _ in range(2)] == [[], []]  # a second refusal in a row: twice as long
    lookup.feedback(1, 1)  # taken whole: the length doubles again
    assert lookup.length == 2
    lookup.timed(False, 1, 10_000_000)
    lookup.timed(True, 2, 10_000_000)  # and drafting pays: the next refusal pauses one step again
    lookup.feedback(2, 0)
    assert [lookup.draft(8) for _ in range(2)] == [[], [3]]


def test_only_a_match_of_the_longest_n_gram_drafts_through_a_pause() -> None:
    short = PromptLookup([1, 2, 3, 9, 1, 2], max_draft=4)
    short.feedback(4, 0)  # refused: a pause of one step
    assert short.draft(4) == []  # "1 2" matches, but a pair is weak evidence: the pause holds
    body = list(range(100, 115))  # longer than the longest n-gram
    repeating = PromptLookup([*body, 1, *body], max_draft=4)
    repeating.feedback(4, 0)
    assert repeating.draft(4) == [1, 100]  # the reply repeats a long stretch: draft (length halved to 2)


def test_drafting_pauses_while_a_token_costs_more_with_drafts_than_without() -> None:
    lookup = PromptLookup([1, 2, 3, 4, 5, 1, 2], max_draft=4)
    lookup.timed(False, 1, 10_000_000)  # a plain step: 10 ms a token
    lookup.timed(True, 2, 12_000_000)  # a drafted one: 6 ms a token, cheaper: go on
    assert lookup.draft(4) == [3, 4, 5, 1]
    lookup.timed(True, 1, 16_000_000)  # the running cost with drafts rises to 11 ms: dearer
    assert lookup.draft(4) == []  # so the next step goes without
    assert lookup.draft(4) == [3, 4, 5, 1]  # and then it tries again


def test_a_draft_taken_whole_is_not_stopped_by_the_clock() -> None:
    lookup = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2], max_draft=8)
    lookup.timed(False, 1, 10_000_000)  # a plain step: 10 ms a token
    assert lookup.draft(2) == [3, 4]
    lookup.feedback(2, 2)  # taken whole, with the token after it:
    for token in (3, 4, 5):
        lookup.append(token)
    lookup.timed(True, 3, 45_000_000)  # 15 ms a token: a short draft's batch is dear, but
    assert lookup.draft(8) == [6, 7, 8, 9, 1, 2, 3, 4]  # the next, longer one is the test, not a pause
    lookup.feedback(4, 1)  # cut short
    lookup.timed(True, 2, 40_000_000)  # and dearer still: now the clock pauses drafting
    assert lookup.draft(8) == []


def test_a_long_draft_taken_whole_ends_the_pause_refusals_earned() -> None:
    body = list(range(100, 115))
    lookup = PromptLookup([*body, 1, *body], max_draft=32)
    for _ in range(3):
        lookup.feedback(4, 0)  # refusals: pauses of 1, 2 and 4 steps, the length down to 4
    assert lookup.pause == 4
    assert lookup.draft(8) == [1, 100, 101, 102]  # a long match drafts through the pause
    lookup.feedback(4, 4)  # and is taken whole: the reply is copying
    assert lookup.pause == 0 and lookup.next_pause == 1


# ---- replies ------------------------------------------------------------------------------


@pytest.fixture
def drafts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every draft the engine verifies, as (tokens guessed, tokens the model agreed with)."""
    seen: list[tuple[int, int]] = []
    feedback = drafting.PromptLookup.feedback

    def spy(self: PromptLookup, drafted: int, accepted: int) -> None:
        seen.append((drafted, accepted))
        feedback(self, drafted, accepted)

    monkeypatch.setattr(drafting.PromptLookup, "feedback", spy)
    return seen


#: A fixed thread count: the comparison should not hinge on what the automatic count saw.
THREADS = {"num_thread": 2}


def chat(m: ModelManager, content: str, options: dict, **kw) -> tuple[str, int, str]:
    options = {**THREADS, **options}
    # keep_alive 0: every reply starts from a fresh context. A reused prefix has its last prompt
    # token decoded alone rather than inside the prompt's batch, which llama.cpp computes with
    # another kernel, so a comparison must start both sides from the same cache.
    r = m.chat(model=SMOLLM, messages=[{"role": "user", "content": content}], stream=False,
               keep_alive=kw.pop("keep_alive", 0), options=options, **kw)
    return r.message.content, r.eval_count, r.done_reason


def test_greedy_replies_are_the_same_with_drafts_and_most_tokens_come_from_them(manager, drafts) -> None:
    plain = chat(manager, EDIT, GREEDY)
    assert not drafts  # off by default
    drafted = chat(manager, EDIT, {**GREEDY, "draft_num_predict": 8})
    assert drafted == plain
    assert "def f5(x):" in plain[0]  # the reply repeats the cell, as edit-style replies do
    accepted = sum(a for _, a in drafts)
    assert accepted > plain[1] / 2, drafts  # most tokens came from verified guesses


def test_seeded_sampling_is_the_same_with_drafts(manager, drafts) -> None:
    options = {"temperature": 0.3, "top_k": 40, "top_p": 0.9, "seed": 1234, "num_predict": 90}  # the dist sampler
    plain = chat(manager, EDIT, options)
    drafted = chat(manager, EDIT, {**options, "draft_num_predict": 6})
    assert drafted == plain
    assert sum(a for _, a in drafts) > 0


def test_length_and_stop_strings_hold_with_drafts(manager) -> None:
    for limit in (1, 7, 20):
        text, count, reason = chat(manager, EDIT, {"temperature": 0, "num_predict": limit, "draft_num_predict": 8})
        assert (count, reason) == (limit, "length")
        assert (text, count) == chat(manager, EDIT, {"temperature": 0, "num_predict": limit})[:2]
    stop = {"temperature": 0, "num_predict": 90, "stop": ["def f4"]}
    text, _, reason = chat(manager, EDIT, {**stop, "draft_num_predict": 8})
    assert reason == "stop" and "def f4" not in text and "def f3" in text
    assert text == chat(manager, EDIT, stop)[0]


SHORT_CODE = "\n".join(f"def f{i}(x):\n    return x * {i}" for i in range(4))


def test_a_second_turn_on_the_reused_prefix_is_the_same_with_drafts(manager, drafts) -> None:
    """Both turns stay under 256 cached tokens (see the module's docstring)."""
    def two_turns(options: dict) -> list[str]:
        manager.unload(SMOLLM)  # both sides start from a fresh context; the second turn reuses the first
        messages = [{"role": "user", "content": f"Repeat this code exactly:\n```python\n{SHORT_CODE}\n```"}]
        first = manager.chat(model=SMOLLM, messages=messages, stream=False, options=options)
        messages += [{"role": "assistant", "content": first.message.content},
                     {"role": "user", "content": "Now once more, with y instead of x."}]
        second = manager.chat(model=SMOLLM, messages=messages, stream=False, options=options)
        assert second.prompt_eval_count < 60  # only the new turn was evaluated: the rest was reused
        return [first.message.content, second.message.content]

    options = {"temperature": 0, "num_predict": 40, **THREADS}
    assert two_turns({**options, "draft_num_predict": 8}) == two_turns(options)
    assert sum(a for _, a in drafts) > 0


@pytest.fixture
def parallel(shared_models, monkeypatch):
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")
    m = ModelManager(Store(shared_models))
    yield m
    m.close()


def test_drafting_requests_batched_together_get_their_own_replies(parallel, drafts) -> None:
    """Two sequences drafting in the same batches, each verified and trimmed in the one shared
    cache: each gets a reply to its own prompt, built from its own verified guesses.

    Not bit for bit those of decoding alone: a refused guess frees cells in the shared cache
    that the other sequence's next token may take, so a sequence's cells no longer lie in the
    order of its positions, and flash attention sums them in cell order (see the README)."""
    code = "\n".join(f"def f{i}(x):\n    return x * {i}" for i in range(3))
    tasks = {"x": f"Repeat this code exactly:\n```python\n{code}\n```",
             "y": f"Repeat this code exactly:\n```python\n{code.replace('x', 'y')}\n```"}
    options = {"temperature": 0, "num_predict": 30}
    together: dict[str, str] = {}
    start = threading.Barrier(len(tasks))

    def run(name: str) -> None:
        start.wait()
        together[name] = chat(parallel, tasks[name], {**options, "draft_num_predict": 8})[0]

    threads = [threading.Thread(target=run, args=(t,)) for t in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert "def f0(x)" in together["x"] and "(y)" not in together["x"]
    assert "def f0(y)" in together["y"] and "(x)" not in together["y"]
    assert sum(a for _, a in drafts) > 0
