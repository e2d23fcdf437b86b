"""The repeat penalty, applied to the few tokens it touches instead of the whole vocabulary.

llama.cpp's penalties sampler looks every candidate up in its table of recent tokens: 49,152
hash lookups a token for SmolLM2 and 262,144 for gemma3 (about 0.25 and 1.3 ms here, a tenth
of a gemma3 decode step), to change at most ``repeat_last_n`` logits. This does the same
arithmetic on just those logits, in place in llama.cpp's row, before the rest of the chain
reads it, and puts them back afterwards so log-probabilities still come from the model's own
logits (as they do with llama.cpp's sampler, which changes only its copy).

Only the repeat penalty is done here, where its float32 arithmetic is exactly llama.cpp's
(``logit * penalty`` when the logit is not positive, else ``logit / penalty``). Frequency and
presence penalties stay with llama.cpp's sampler, whose compiler may fuse their multiply-add.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

import numpy as np

from .jobs import SamplingParams


def handled_here(s: SamplingParams) -> bool:
    """Whether the request's penalty is the repeat penalty alone, over a window that holds
    tokens: then ``RepeatPenalty`` applies it, and the C chain has no penalties sampler."""
    return (s.repeat_last_n != 0 and s.repeat_penalty != 1.0
            and not s.frequency_penalty and not s.presence_penalty)


class RepeatPenalty:
    """The last ``last_n`` tokens (prompt and reply) and how often each occurs in them, kept as
    llama.cpp's penalties sampler keeps them."""

    def __init__(self, penalty: float, last_n: int, history: Iterable[int]) -> None:
        self.penalty = np.float32(penalty)
        self._recent: deque[int] = deque(maxlen=last_n)
        self._counts: Counter[int] = Counter()
        for token in history:
            self.accept(token)

    def accept(self, token: int) -> None:
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        self._counts[token] += 1
        self._recent.append(token)

    def tokens(self) -> np.ndarray:
        return np.fromiter(self._counts, dtype=np.intp, count=len(self._counts))

    def penalized(self, logits: np.ndarray) -> np.ndarray:
        """The penalized values of ``logits`` (float32, the penalized tokens' own)."""
        return np.where(logits <= 0, logits * self.penalty, logits / self.penalty)
