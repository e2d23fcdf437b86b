"""gemma3's sliding-window layers keep a ring of about n_swa + n_ubatch cells, as llama-server
gives them, instead of a cell for every position: a cached prefix is then reusable only as far
back as the ring reaches. A prompt that continues the cached one reuses it; one that parts from
it further back than the ring (on the same sequence, from a state saved in RAM, or from another
sequence's cells) is evaluated again, or goes on from a checkpoint of the window kept where two
prompts parted, and gets the reply a fresh model gives (within float noise: the window cells lie
elsewhere in the ring). Reusing it anyway would let the window layers attend to nothing there,
silently."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
from ollama_nb.runtime import Engine
from ollama_nb.serving.gpu import kv_cache_bytes, window_layers

from .conftest import GEMMA, SMOLLM

# about 1,500 tokens: past gemma3's ring of 1,024 window cells, so its oldest cells are overwritten
LONG = "".join(f"Entry {i}: the keeper of lighthouse number {i} wrote that the storm was "
               f"{('calm', 'wild', 'grey', 'bright')[i % 4]} tonight.\n" for i in range(70))
PARTED = LONG[:600] + "Now summarise the first entry in one line:"  # leaves LONG ~150 tokens in
OTHER = "".join(f"Note {i}: the baker of street {i} sold {i * 3} loaves before noon.\n" for i in range(40))
OPTIONS = {"temperature": 0, "num_predict": 12, "num_ctx": 4096}


def ask(m: ModelManager, prompt: str, options: dict[str, Any] = OPTIONS) -> tuple[str, int, list[float]]:
    """(reply, prompt tokens evaluated, the reply tokens' log-probabilities)."""
    r = m.generate(model=GEMMA, prompt=prompt, raw=True, stream=False, logprobs=True, options=options)
    return r.response, r.prompt_eval_count, [lp.logprob for lp in r.logprobs]


def engine_of(m: ModelManager) -> Any:
    (runner,) = m.scheduler._runners.values()
    return runner.engine


def fresh(models: Path, *prompts: str) -> tuple[str, int, list[float]]:
    """What a freshly loaded model answers to the last of ``prompts``, asked in turn."""
    m = ModelManager(Store(models))
    try:
        return [ask(m, prompt) for prompt in prompts][-1]
    finally:
        m.close()


def test_the_window_layers_keep_a_ring_and_a_continued_prompt_reuses_it(shared_models: Path) -> None:
    m = ModelManager(Store(shared_models))
    try:
        first = ask(m, LONG)
        engine = engine_of(m)
        assert engine.params.swa_full is False
        assert first[1] > 1100
        assert engine._window_start(0) > 0  # the window layers let go of the oldest positions
        follow = ask(m, LONG + first[0] + "\nAnd entry 70:")
        assert follow[1] < 30  # all of the first turn came from the cache
        assert follow[0].strip()
    finally:
        m.close()


def test_a_prompt_parting_before_the_ring_is_evaluated_again(shared_models: Path) -> None:
    m = ModelManager(Store(shared_models))
    try:
        ask(m, LONG)
        parted = ask(m, PARTED)
    finally:
        m.close()
    alone = fresh(shared_models, PARTED)
    assert parted[1] == alone[1] > 100  # the whole prompt, not the 150 tokens the two share
    assert_same_reply(parted, alone, within=0.01)


def test_after_a_long_reply_the_prompt_goes_on_from_its_end(shared_models: Path) -> None:
    """A reply's tokens overwrite the ring's oldest cells: some 512 tokens on, the prompt's end
    has lost its window, and the same prompt again (a regenerated reply) or one that goes on
    from its end differently (a next turn that leaves the reply's thinking out) would be
    evaluated again in full. The window of the prompt's end, kept just before, serves both."""
    long_reply = {**OPTIONS, "num_predict": 560}
    m = ModelManager(Store(shared_models))
    try:
        first = ask(m, LONG, long_reply)
        assert len(first[2]) == 560 and first[1] > 1100
        again = ask(m, LONG, long_reply)
        other = ask(m, LONG + "Now list the wild nights:")
    finally:
        m.close()
    assert again[1] == 1  # all of it cached, the first token from the prompt's kept logits
    assert again[0] == first[0]  # 560 greedy tokens alike; a window missing cells parts within a few
    # the restored cells lie elsewhere in the ring: float noise that grows along the reply
    assert_same_reply((*again[:2], again[2][:12]), (*first[:2], first[2][:12]))
    assert other[1] < 20  # only what follows LONG
    # as a model that kept LONG's ring (a short reply) evaluates the same few tokens after it
    assert_same_reply(other, fresh(shared_models, LONG, LONG + "Now list the wild nights:"))


def test_a_long_reply_to_a_prompt_answered_from_its_kept_logits_keeps_its_end_too(shared_models: Path) -> None:
    """The prompt's end window is kept only for a reply that may outrun the ring: a short one
    (num_predict 12) takes none. The same prompt then comes again with room for a long reply,
    answered from the kept logits with no evaluation at all; it keeps the window there, and
    the prompt once more is answered the same way after that long reply."""
    m = ModelManager(Store(shared_models))
    try:
        short = ask(m, LONG)
        checkpoints = engine_of(m).window_checkpoints
        assert len(checkpoints) == 0
        long = ask(m, LONG, {**OPTIONS, "num_predict": 560})
        assert long[1] == 1 and len(checkpoints) == 1
        again = ask(m, LONG)
    finally:
        m.close()
    assert again[1] == 1
    assert_same_reply(again, short)


def assert_same_reply(got: tuple[str, int, list[float]], fresh_one: tuple[str, int, list[float]], *,
                      within: float = 0.15) -> None:
    """The same text, and log-probabilities within float noise: a prompt that goes on from a
    checkpoint, or whose window cells lie elsewhere in the ring, sums in another order (a cache
    that lost cells it needs is off by far more). A prompt evaluated again from its start is
    held to ``within`` 0.01: its evaluation stops for a checkpoint only where every token keeps
    the kernel it gets straight (stopping anywhere else moved them by up to 0.7)."""
    assert got[0] == fresh_one[0]
    assert max(abs(a - b) for a, b in zip(got[2], fresh_one[2], strict=True)) < within


def test_a_saved_state_is_restored_only_as_far_back_as_its_ring_reaches(
        shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = ModelManager(Store(shared_models))
    try:
        first = ask(m, LONG)
        ask(m, OTHER)  # takes the only sequence: LONG's cells are saved in RAM
        assert len(engine_of(m).prompt_cache) == 1
        parted = ask(m, PARTED)
        follow = ask(m, LONG + first[0] + "\nAnd entry 70:")
    finally:
        m.close()
    monkeypatch.setenv("OLLAMA_NB_PROMPT_CACHE_MB", "0")
    unsaved = fresh(shared_models, OTHER, PARTED)  # <bos> comes from OTHER's cells there too
    assert parted[1] == unsaved[1]
    assert_same_reply(parted, unsaved, within=0.01)
    assert parted[1] > 100
    assert follow[1] < 30  # LONG's saved state did serve the prompt that continues it


def test_another_sequence_lends_its_cells_only_where_its_ring_reaches(
        shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "2")
    monkeypatch.setenv("OLLAMA_NB_PROMPT_CACHE_MB", "0")
    m = ModelManager(Store(shared_models))
    try:
        first = ask(m, LONG)
        parted = ask(m, PARTED)  # the empty second sequence, which must not copy LONG's first cells
        branch = ask(m, LONG + "Entry 70: the keeper")  # but may copy all of them
    finally:
        m.close()
    assert first[1] > 1100
    alone = fresh(shared_models, PARTED)
    assert parted[1] == alone[1]
    assert_same_reply(parted, alone, within=0.01)
    assert branch[1] < 30


_KV_SIZE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB")


@pytest.mark.parametrize(("model", "parallel", "swa_full"), [
    (GEMMA, 1, None), (GEMMA, 2, None), (GEMMA, 1, True), (SMOLLM, 1, None),
])
def test_the_kv_estimate_is_what_llama_cpp_allocates(manager: Any, caplog: pytest.LogCaptureFixture,
                                                    model: str, parallel: int, swa_full: bool | None) -> None:
    """``ps``'s size counts the window layers' ring, not a cell per position: gemma3's cache at
    4,096 tokens is 27 MiB, not 72."""
    spec = manager.spec(model)
    params = dataclasses.replace(manager.load_params(spec, {}), num_ctx=2048, num_parallel=parallel,
                                 swa_full=swa_full)
    caplog.set_level(logging.DEBUG, logger="ollama_nb.llama_cpp")
    engine = Engine(spec.model_path, params)
    try:
        allocated = sum(float(size) for size in _KV_SIZE.findall(caplog.text))
        estimate = kv_cache_bytes(spec, 2048 * parallel, engine.params.kv_cache_type, engine.params)
    finally:
        engine.close()
    assert allocated > 0
    assert round(estimate / 2**20, 2) == allocated
    assert (window_layers(spec)[0] > 0) == (model == GEMMA)


# The same instructions before every document of a table, each document longer than the ring
INSTRUCTIONS = "".join(f"Rule {i}: when the keeper of lighthouse number {i} reports a "
                       f"{('calm', 'wild', 'grey', 'bright')[i % 4]} storm, log it.\n" for i in range(30))
DOCUMENTS = ["".join(f"Report {j}.{k}: lighthouse {k} saw a storm that was "
                     f"{('calm', 'wild', 'grey', 'bright')[(j + k) % 4]}.\n" for k in range(40)) for j in range(4)]


def test_where_two_prompts_parted_the_window_is_kept_for_the_next(shared_models: Path) -> None:
    """The second document evaluates everything (the ring had moved past the instructions) and
    keeps the window cells of the instructions, where the two prompts parted; from then on every
    document evaluates only itself, and gets what a fresh model answers to within float noise
    (its window cells are the same values, in other places of the ring)."""
    m = ModelManager(Store(shared_models))
    try:
        runs = [ask(m, INSTRUCTIONS + doc + "Summary:") for doc in DOCUMENTS]
        checkpoints = engine_of(m).window_checkpoints
        assert len(checkpoints) == 1
    finally:
        m.close()
    whole = runs[0][1]
    assert runs[1][1] == whole  # the ring no longer reached back to the instructions
    assert runs[2][1] < 0.6 * whole and runs[3][1] == runs[2][1]  # they came from the checkpoint
    assert_same_reply(runs[3], fresh(shared_models, INSTRUCTIONS + DOCUMENTS[3] + "Summary:"))

