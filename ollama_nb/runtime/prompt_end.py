"""The logits of a prompt's last token, kept after the prompt is evaluated.

A prompt sent again in full (a notebook cell run again, a regenerated reply, a client retrying)
finds all its tokens in the KV cache, yet its first reply token needs the logits of its last
token. Ollama's runner and llama-server evaluate that token again, alone in its batch. llama.cpp's
CPU flash attention scores a one-token batch on another path than the prompt batch that scored
the token the first time (that one is tiled from 64 rows on; a lone row is split across threads
past 256 cells), so the logits differ in their last bits, and the greedy reply to the same prompt
changed between its first and second run (for each of three SmolLM2 prompts of 155 to 834
tokens, and for 7 of 15 gemma3 prompts; the third run agreed with the second).
Keeping the row the prompt batch gave (``n_vocab`` floats: 192 KiB for SmolLM2, 1 MiB for
gemma3) makes every run the first, and one decode step quicker to its first token.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from .library import lib

#: What a sampled token's logits are read from: a row of the batch just decoded, or a kept row.
LogitsSource = int | np.ndarray


@dataclass(frozen=True)
class PromptEnd:
    """``row`` is what the model gave after the first ``n_tokens`` tokens of a sequence's cells;
    it holds as long as those cells do."""

    n_tokens: int
    row: np.ndarray


def sample_row(chain: Any, row: np.ndarray) -> int:
    """The token a sampler chain picks from a kept logits row, as ``llama_sampler_sample`` picks
    it from the context's: every token with its logit, unsorted, then apply and accept."""
    lc = lib()
    candidates = np.empty(len(row), dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])
    candidates["id"] = np.arange(len(row), dtype=np.int32)
    candidates["logit"] = row
    candidates["p"] = 0.0
    array = lc.llama_token_data_array(
        data=candidates.ctypes.data_as(ctypes.POINTER(lc.llama_token_data)),
        size=len(row),
        selected=-1,
        sorted=False,
    )
    lc.llama_sampler_apply(chain, ctypes.byref(array))
    if not 0 <= array.selected < array.size:
        raise RuntimeError("the sampler chain selected no token")
    token = int(array.data[array.selected].id)
    lc.llama_sampler_accept(chain, token)
    return token
