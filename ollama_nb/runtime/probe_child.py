"""The CPU probe's child process (see ``probe``): decode a real batch through the installed
llama.cpp with extra buffer types off, then on, printing one JSON line after each pass. If the
fast kernels fault, this process dies and its parent reads the signal; nothing else is at risk.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROMPT_TOKENS = 128  # a real batch: AMX takes only matrices of more than one row
DECODE_STEPS = 4  # and the one-row generation path after it


def _decode(lc: Any, model_path: Path, *, extra_buffers: bool, threads: int) -> tuple[list[float], list[str]]:
    """Load the probe model, decode a prompt batch and a few single tokens; return every logit
    and the model buffer types llama.cpp reported while loading."""
    import numpy as np

    from .probe_model import VOCAB

    buffers: list[str] = []

    class BufferTypes(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kind = model_buffer_type(record.getMessage())
            if kind is not None:
                buffers.append(kind)

    native = logging.getLogger("ollama_nb.llama_cpp")
    handler = BufferTypes()
    native.addHandler(handler)
    native.setLevel(logging.DEBUG)
    no_devices = (ctypes.c_void_p * 1)(None)  # the CPU alone: no GPU takes the matrices
    try:
        mparams = lc.llama_model_default_params()
        mparams.use_extra_bufts = extra_buffers
        mparams.n_gpu_layers = 0
        mparams.devices = ctypes.cast(no_devices, ctypes.c_void_p)
        model = lc.llama_model_load_from_file(str(model_path).encode(), mparams)
        if not model:
            raise RuntimeError("llama.cpp could not load the probe model")
    finally:
        native.removeHandler(handler)
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = PROMPT_TOKENS + DECODE_STEPS + 8
    cparams.n_batch = cparams.n_ubatch = PROMPT_TOKENS
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.op_offload = False
    cparams.no_perf = True
    ctx = lc.llama_init_from_model(model, cparams)
    if not ctx:
        lc.llama_model_free(model)
        raise RuntimeError("llama.cpp could not create a context for the probe model")
    batch = lc.llama_batch_init(PROMPT_TOKENS, 0, 1)
    try:
        tokens = [int(t) for t in np.random.default_rng(1).integers(0, VOCAB, PROMPT_TOKENS)]
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = PROMPT_TOKENS
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed on the probe batch")
        logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(PROMPT_TOKENS * VOCAB,)).tolist()
        for step in range(DECODE_STEPS):
            batch.token[0], batch.pos[0], batch.logits[0] = tokens[step], PROMPT_TOKENS + step, True
            batch.n_tokens = 1
            if lc.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed on a probe token")
            logits += np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, 0), shape=(VOCAB,)).tolist()
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)
    return logits, buffers


def _largest_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """max |a - b| / max |a|: NaN or infinity anywhere counts as everything different."""
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("inf")
    return float(np.abs(x - y).max() / max(float(np.abs(x).max()), 1e-6))


def child_main() -> int:
    """Baseline pass, then the pass with extra buffer types; a JSON line after each."""
    from .library import lib

    threads = max(2, min(4, os.cpu_count() or 2))  # several threads: the fault hit a pool thread
    lc = lib()
    lc.llama_backend_init()
    with tempfile.TemporaryDirectory(prefix="ollama_nb-probe-") as tmp:
        from .probe_model import write_probe_model

        path = write_probe_model(Path(tmp) / "probe.gguf")
        baseline, plain_buffers = _decode(lc, path, extra_buffers=False, threads=threads)
        print(json.dumps({"pass": "baseline", "buffers": extra_types(plain_buffers)}), flush=True)
        fast, buffers = _decode(lc, path, extra_buffers=True, threads=threads)
    print(json.dumps({"pass": "extra", "buffers": extra_types(buffers),
                      "difference": _largest_difference(baseline, fast)}), flush=True)
    return 0


def model_buffer_type(message: str) -> str | None:
    """The buffer type a llama.cpp load line names ("load_tensors:   CPU_REPACK model buffer size
    = 0.33 MiB" -> "CPU_REPACK"), None for any other line."""
    if "model buffer size" not in message:
        return None
    return message.split(":", 1)[-1].split("model buffer size")[0].strip()


def extra_types(buffers: Sequence[str]) -> list[str]:
    """The extra buffer types among the model buffers llama.cpp reported (CPU_REPACK, AMX, ...)."""
    return sorted({b for b in buffers if b not in ("CPU", "CPU_Mapped")})



if __name__ == "__main__":
    sys.exit(child_main())
