"""Conversations kept in memory after their KV cells are given to another request.

A model has as many KV sequences as ``OLLAMA_NUM_PARALLEL``: one, by default. When two
conversations take turns on it (a notebook's chat and a client's request, or two notebooks), each
turn overwrites the other's cache, and the next turn of the first must evaluate its whole history
again. llama-server avoids that by saving an idle slot's state in RAM; this is the same idea. The
KV of the sequence about to be overwritten is copied out (``llama_state_seq_get_data``) with the
tokens it holds, and a later prompt that shares a longer prefix with a saved state than with any
live sequence gets that state copied back instead of recomputing it. The cells hold the very
values computed before, so a restored turn is exactly the turn that kept its sequence.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sized
from dataclasses import dataclass

from .prompt_end import PromptEnd
from .sequence import common_prefix, window_holds

#: Below this many tokens a prompt is cheaper to evaluate again than to save and restore.
MIN_TOKENS = 32


@dataclass(frozen=True)
class SavedState:
    tokens: tuple[int, ...]
    data: Sized  # the sequence's state as llama.cpp wrote it: bytes, or the ctypes buffer it wrote into
    prompt_end: PromptEnd | None = None  # the kept logits of the prompt those cells began with
    window_start: int = 0  # the oldest position its sliding-window layers still held

    @property
    def size_bytes(self) -> int:
        return len(self.data) + (self.prompt_end.row.nbytes if self.prompt_end is not None else 0)


class PromptCache:
    """Saved sequence states, least recently used first out, within ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._states: OrderedDict[tuple[int, ...], SavedState] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def worth_saving(self, tokens: list[int]) -> bool:
        """Whether a sequence holding ``tokens`` should be saved before it is overwritten (not
        when it is short, or already saved as it is)."""
        return self.limit_bytes > 0 and len(tokens) >= MIN_TOKENS and tuple(tokens) not in self._states

    def save(self, tokens: list[int], data: Sized, prompt_end: PromptEnd | None = None,
             window_start: int = 0) -> None:
        key = tuple(tokens)
        state = SavedState(key, data, prompt_end, window_start)
        if state.size_bytes > self.limit_bytes:
            return
        # a saved state that is a prefix of this one is covered by it
        for old in [k for k in self._states if len(k) <= len(key) and key[: len(k)] == k]:
            self._drop(old)
        self._states[key] = state
        self._bytes += state.size_bytes
        while self._bytes > self.limit_bytes:
            self._drop(next(iter(self._states)))

    def best(self, prompt: list[int], better_than: int, n_swa: int = 0) -> tuple[SavedState, int] | None:
        """The saved state sharing the longest prefix with ``prompt``, if longer than
        ``better_than`` tokens and its sliding window (``n_swa``) reaches back that far, with
        that length; it becomes the most recently used."""
        found: tuple[SavedState, int] | None = None
        for state in self._states.values():
            common = common_prefix(state.tokens, prompt)
            if (common > better_than and (found is None or common > found[1])
                    and window_holds(state.window_start, common, n_swa)):
                found = (state, common)
        if found is not None:
            self._states.move_to_end(found[0].tokens)
        return found

    def _drop(self, key: tuple[int, ...]) -> None:
        self._bytes -= self._states.pop(key).size_bytes
