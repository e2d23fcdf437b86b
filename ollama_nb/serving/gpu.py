"""GPU offload, chosen the way Ollama chooses it.

GPU layers: ``num_gpu`` when given (0 = CPU), otherwise as
many layers as fit in free VRAM (minus ``OLLAMA_GPU_OVERHEAD``) when the llama.cpp build can
offload, none when it cannot or ``OLLAMA_LLM_LIBRARY=cpu``. Free VRAM comes from ``nvidia-smi``,
which honours ``CUDA_VISIBLE_DEVICES`` like llama.cpp does.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from ..base import config
from ..runtime import supports_gpu_offload

if TYPE_CHECKING:
    from ..models.catalog import ModelSpec
    from ..runtime import Engine, LoadParams

log = logging.getLogger("ollama_nb.gpu")
COMPUTE_MARGIN = 1 << 30  # llama.cpp's own fit margin for compute buffers


def free_vram_bytes() -> list[int]:
    """Free memory per visible NVIDIA GPU, [] when there is none or nvidia-smi is missing."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    free = {}
    for line in out.strip().splitlines():
        idx, _, mib = line.partition(",")
        if idx.strip().isdigit() and mib.strip().isdigit():
            free[idx.strip()] = int(mib.strip()) << 20
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        order = [v.strip() for v in visible.split(",") if v.strip()]
        return [free[v] for v in order if v in free]
    return [free[k] for k in sorted(free, key=int)]


def _layer_count(spec: ModelSpec) -> int:
    info = spec.gguf
    if info is None:
        return 0
    return int(info.kv.get(f"{info.architecture}.block_count") or 0)


_BYTES_PER_KV_ELEMENT = {1: 2.0, 8: 34 / 32, 2: 18 / 32}  # f16, q8_0, q4_0 (ggml block sizes)


#: llama.cpp's own pattern for architectures whose GGUF need not say which layers use the
#: sliding window: of every n layers, the last attends to everything and the others to the window.
_WINDOW_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma-embedding": 6, "cohere2": 4, "gpt-oss": 2}


def window_layers(spec: ModelSpec) -> tuple[int, int]:
    """(how many layers attend through a sliding window, its width); (0, 0) when none do, or
    when this architecture's pattern is unknown (then every layer counts as full, the safe side)."""
    info = spec.gguf
    if info is None:
        return 0, 0
    arch, kv = info.architecture, info.kv
    n_swa, layers = int(kv.get(f"{arch}.attention.sliding_window") or 0), _layer_count(spec)
    if n_swa <= 0 or layers <= 0:
        return 0, 0
    pattern = kv.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list):  # a flag per layer
        return sum(bool(flag) for flag in pattern[:layers]), n_swa
    period = int(pattern) if isinstance(pattern, int) and pattern > 0 else _WINDOW_PATTERN.get(arch, 0)
    if period <= 0:
        return 0, 0
    return sum(1 for layer in range(layers) if layer % period < period - 1), n_swa


def window_cells(n_swa: int, num_ctx: int, params: LoadParams | None = None) -> int:
    """The cells llama.cpp gives each sliding-window layer of a context of ``num_ctx`` cells in
    all: a ring of the window and one micro-batch (padded to 256), unless the cache is full size."""
    if params is not None and params.swa_full:
        return num_ctx
    parallel = max(1, params.num_parallel) if params is not None else 1
    unified = params is not None and params.kv_unified and parallel > 1
    ubatch = min(params.num_batch, 512) if params is not None else 512
    ring = -(-(n_swa * (parallel if unified else 1) + ubatch) // 256) * 256
    return min(num_ctx, ring) if unified else parallel * min(num_ctx // parallel, ring)


def kv_cache_bytes(spec: ModelSpec, num_ctx: int, kv_type: int = 1, params: LoadParams | None = None) -> int:
    """K and V for every layer: cells x kv heads x (key + value dim) x bytes per element, where a
    sliding-window layer has only its ring of cells (``window_cells``)."""
    info = spec.gguf
    if info is None:
        return 0
    arch, kv = info.architecture, info.kv
    layers = _layer_count(spec)
    heads = int(kv.get(f"{arch}.attention.head_count") or 1)
    heads_kv = int(kv.get(f"{arch}.attention.head_count_kv") or heads)
    embd = int(kv.get(f"{arch}.embedding_length") or 0)
    k_dim = int(kv.get(f"{arch}.attention.key_length") or (embd // max(heads, 1)))
    v_dim = int(kv.get(f"{arch}.attention.value_length") or k_dim)
    windowed, n_swa = window_layers(spec)
    cells = (layers - windowed) * num_ctx + (windowed * window_cells(n_swa, num_ctx, params) if windowed else 0)
    return int(cells * heads_kv * (k_dim + v_dim) * _BYTES_PER_KV_ELEMENT.get(kv_type, 2.0))


def choose_gpu_layers(spec: ModelSpec, num_gpu: Any, num_ctx: int) -> int:
    """Layers to offload: explicit ``num_gpu`` wins; -1/None means automatic."""
    if config.force_cpu():
        return 0
    if num_gpu is not None and int(num_gpu) >= 0:
        return int(num_gpu)

    if not supports_gpu_offload():
        return 0
    free = free_vram_bytes()
    if not free:
        return 0
    layers = _layer_count(spec)
    budget = (max(free) - config.gpu_overhead_bytes() - COMPUTE_MARGIN - kv_cache_bytes(spec, num_ctx)
              - _projector_bytes(spec))  # the vision projector goes to the GPU first, as llama-server puts it
    weights = os.path.getsize(spec.model_path) if spec.model_path else 0
    per_layer = weights / max(layers + 1, 1)
    fit = int(budget // per_layer) if per_layer > 0 and budget > 0 else 0
    chosen = -1 if fit >= layers + 1 else max(0, fit)
    log.debug("auto num_gpu for %s: %s of %d layers", spec.name, chosen, layers)
    return chosen


def memory_estimate(spec: ModelSpec, engine: Engine, params: LoadParams) -> tuple[int, int]:
    """(size, size_vram) for ``ps``: weights + KV cache + the vision projector, and the share of
    it on the GPU (the projector is there whenever any layer is)."""
    projector = _projector_bytes(spec)
    model = engine.model_size + kv_cache_bytes(spec, params.num_ctx * params.num_parallel, params.kv_cache_type, params)
    total = model + projector
    layers = _layer_count(spec)
    if params.num_gpu_layers == 0 or layers == 0:
        return total, 0
    if params.num_gpu_layers < 0 or params.num_gpu_layers > layers:
        return total, total
    return total, int(model * params.num_gpu_layers / (layers + 1)) + projector


def _projector_bytes(spec: ModelSpec) -> int:
    try:
        return os.path.getsize(spec.projector) if spec.projector else 0
    except OSError:
        return 0
