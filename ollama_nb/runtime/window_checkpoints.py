"""Saved states of a sequence's sliding-window layers, so that a prefix stays reusable after the
ring of window cells has moved past it.

A model with sliding-window attention (gemma3) keeps in those layers only a ring of the newest
cells (``Engine``'s ``swa_full`` off, as llama-server has it). Its full-attention layers keep
every cell, so a cached prefix is lost only in the window layers, and only once the sequence has
gone on past the ring. Requests that share a long beginning and then part (the same
instructions before every row of a table, one system prompt for many questions, a regenerated
long reply) would then evaluate that beginning again each time. llama-server keeps checkpoints
of the window layers for this, at chat-message starts; here the engine keeps one where two
prompts parted, the place where the next one is likeliest to part as well. Restoring one puts
back the window cells of exactly that prefix; the full-attention cells are still there.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .sequence import window_holds

#: llama.cpp's CPU flash attention takes a ubatch of at least this many query rows through its
#: tiled F32 kernel, and a smaller one row by row with each query rounded to the cache's type
#: (ggml-cpu's ``GGML_FA_TILE_Q``): the same tokens then get other logits.
FA_TILE_ROWS = 64


def _row_by_row(length: int, n_batch: int, n_ubatch: int) -> list[tuple[int, int]]:
    """(offset, size) of each ubatch under FA_TILE_ROWS, when ``length`` prompt tokens go in
    batches of ``n_batch`` that llama.cpp cuts into ubatches of ``n_ubatch``."""
    small = []
    for done in range(0, length, n_batch):
        batch = min(n_batch, length - done)
        small += [(done + offset, size) for offset in range(0, batch, n_ubatch)
                  if (size := min(n_ubatch, batch - offset)) < FA_TILE_ROWS]
    return small


def even_stop(start: int, want: int, end: int, n_batch: int, n_ubatch: int, *, lowest: int = 1) -> int:
    """The last place at or before ``want`` (not before ``lowest``, nor within one batch of
    ``want``) where the evaluation of prompt tokens ``start:end`` can stop for a checkpoint and
    go on with every token computed by the kernel it gets without the stop; ``want`` where
    there is none.

    Stopping where a piece of the prompt is left under FA_TILE_ROWS tokens computes those row
    by row: gemma3's reply to a 158-token prompt stopped at 150 had log-probabilities up to 0.7
    off the same prompt evaluated straight (and another greedy reply); stopped at 94, exactly
    the same ones.
    """
    straight = _row_by_row(end - start, n_batch, n_ubatch)
    for stop in range(want, max(start, lowest - 1, want - n_batch), -1):
        before = _row_by_row(stop - start, n_batch, n_ubatch)
        after = [(stop - start + offset, size) for offset, size in _row_by_row(end - stop, n_batch, n_ubatch)]
        if before + after == straight:
            return stop
    return want


@dataclass(frozen=True)
class WindowCheckpoint:
    n_tokens: int  # the prefix the state is of
    window_start: int  # the oldest position its window cells hold
    data: ctypes.Array  # llama_state_seq_get_data_ext(..., LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY)

    @property
    def size_bytes(self) -> int:
        return len(self.data)


#: A sequence keeps at most this many (llama-server's ``--ctx-checkpoints`` default): a long chat
#: takes one at every prompt's end whose reply may outrun the ring.
PER_SEQUENCE = 32


class WindowCheckpoints:
    """Every sequence's checkpoints; past ``limit_bytes`` in all, or ``per_sequence`` for one
    sequence, the oldest are dropped."""

    def __init__(self, n_seq: int, limit_bytes: int, per_sequence: int = PER_SEQUENCE) -> None:
        self.limit_bytes = limit_bytes
        self.per_sequence = per_sequence
        self._by_seq: list[list[WindowCheckpoint]] = [[] for _ in range(n_seq)]
        self._order: list[tuple[int, WindowCheckpoint]] = []  # oldest first, for eviction

    def __len__(self) -> int:
        return len(self._order)

    @property
    def size_bytes(self) -> int:
        return sum(cp.size_bytes for _, cp in self._order)

    def has(self, seq: int, n_tokens: int) -> bool:
        return any(cp.n_tokens == n_tokens for cp in self._by_seq[seq])

    def best(self, seq: int, common: int, n_swa: int) -> WindowCheckpoint | None:
        """The longest checkpoint of ``seq`` within its first ``common`` tokens that the next
        token can go on from."""
        usable = [cp for cp in self._by_seq[seq]
                  if cp.n_tokens <= common and window_holds(cp.window_start, cp.n_tokens, n_swa)]
        return max(usable, key=lambda cp: cp.n_tokens, default=None)

    def add(self, seq: int, checkpoint: WindowCheckpoint) -> None:
        if checkpoint.size_bytes > self.limit_bytes:
            return
        if len(self._by_seq[seq]) >= self.per_sequence:
            oldest = self._by_seq[seq].pop(0)
            self._order.remove((seq, oldest))
        self._by_seq[seq].append(checkpoint)
        self._order.append((seq, checkpoint))
        while self.size_bytes > self.limit_bytes:
            old_seq, old = self._order.pop(0)
            self._by_seq[old_seq].remove(old)

    def cut(self, seq: int, n_tokens: int) -> None:
        """``seq`` now holds only its first ``n_tokens``: checkpoints of longer prefixes are not
        of this sequence any more."""
        stale = [cp for cp in self._by_seq[seq] if cp.n_tokens > n_tokens]
        for cp in stale:
            self._by_seq[seq].remove(cp)
            self._order.remove((seq, cp))

    def clear(self, seq: int) -> None:
        self.cut(seq, -1)
