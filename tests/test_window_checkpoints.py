"""The bookkeeping of window checkpoints, without a model: which one a prompt may go on from,
which go when a sequence is cut back, which go first when they outgrow their budget, and where
a prompt's evaluation may stop to take one."""

from __future__ import annotations

import ctypes

from ollama_nb.runtime.window_checkpoints import (
    FA_TILE_ROWS,
    WindowCheckpoint,
    WindowCheckpoints,
    even_stop,
)


def checkpoint(n_tokens: int, window_start: int, size: int = 100) -> WindowCheckpoint:
    return WindowCheckpoint(n_tokens, window_start, (ctypes.c_uint8 * size)())


def test_the_longest_checkpoint_the_next_token_can_go_on_from_is_chosen() -> None:
    cps = WindowCheckpoints(n_seq=2, limit_bytes=10_000)
    cps.add(0, checkpoint(100, 0))
    cps.add(0, checkpoint(700, 150))  # holds 150..699: enough for a window of 512 at 700
    cps.add(0, checkpoint(900, 600))  # holds 600..899: not enough at 900
    assert cps.best(0, 1000, n_swa=512).n_tokens == 700
    assert cps.best(0, 699, n_swa=512).n_tokens == 100  # within the first 699 tokens only
    assert cps.best(0, 50, n_swa=512) is None
    assert cps.best(1, 1000, n_swa=512) is None  # another sequence's are not this one's


def test_cutting_a_sequence_back_drops_the_checkpoints_past_it() -> None:
    cps = WindowCheckpoints(n_seq=1, limit_bytes=10_000)
    for n in (100, 400, 700):
        cps.add(0, checkpoint(n, 0))
    cps.cut(0, 400)
    assert cps.has(0, 400) and cps.has(0, 100) and not cps.has(0, 700)
    cps.clear(0)
    assert len(cps) == 0 and cps.size_bytes == 0


def test_past_the_budget_the_oldest_go_first_and_an_oversized_one_is_never_kept() -> None:
    cps = WindowCheckpoints(n_seq=2, limit_bytes=250)
    cps.add(0, checkpoint(100, 0))
    cps.add(1, checkpoint(200, 0))
    cps.add(0, checkpoint(300, 0))  # 300 bytes in all: the first one goes
    assert not cps.has(0, 100) and cps.has(1, 200) and cps.has(0, 300)
    assert cps.size_bytes == 200
    cps.add(0, checkpoint(400, 0, size=251))
    assert not cps.has(0, 400) and len(cps) == 2


def test_a_sequence_keeps_its_newest_checkpoints_up_to_its_own_count() -> None:
    cps = WindowCheckpoints(n_seq=2, limit_bytes=10_000, per_sequence=2)
    cps.add(1, checkpoint(50, 0))
    for n_tokens in (100, 200, 300):
        cps.add(0, checkpoint(n_tokens, 0))
    assert not cps.has(0, 100) and cps.has(0, 200) and cps.has(0, 300)
    assert cps.has(1, 50) and len(cps) == 3  # another sequence's stay


def test_a_stop_leaves_no_piece_of_the_prompt_to_be_computed_row_by_row() -> None:
    # 158 tokens straight are one tiled ubatch: stopping at 150 would leave 8 tokens row by row
    assert even_stop(0, 150, 158, 512, 512) == 158 - FA_TILE_ROWS
    assert even_stop(0, 600, 1000, 512, 512) == 600  # 512 + 88, then 400: all tiled already
    assert even_stop(0, 520, 1000, 512, 512) == 512  # not 512 + 8
    assert even_stop(0, 400, 420, 512, 512) == 420 - FA_TILE_ROWS
    # counted from where the evaluation starts: from 100, no stop by 150 leaves 64 before it
    assert even_stop(100, 150, 300, 512, 512) == 150
    assert even_stop(100, 180, 300, 512, 512) == 180


def test_a_prompt_whose_straight_run_ends_row_by_row_keeps_that_end() -> None:
    # 530 tokens straight: 512 tiled, the last 18 row by row; only a stop at 512 keeps that
    assert even_stop(0, 520, 530, 512, 512) == 512
    assert even_stop(0, 500, 530, 512, 512) == 500  # none before 500: the stop it was asked for
    # num_batch 1024 cut into ubatches of 512: the pieces are those of each batch
    assert even_stop(0, 1030, 1100, 1024, 512) == 1024  # not 1024 + 6, nor leaving 6 after 1094


def test_a_stop_is_never_before_the_lowest_place_asked() -> None:
    assert even_stop(0, 100, 130, 512, 512, lowest=64) == 66
    assert even_stop(0, 100, 130, 512, 512, lowest=70) == 100
