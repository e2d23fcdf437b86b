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


def kv_cache_bytes(spec: ModelSpec, num_ctx: int, kv_type: int = 1) -> int:
    """K and V for every layer: layers x ctx x kv heads x (key + value dim) x bytes per element."""
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
    return int(layers * num_ctx * heads_kv * (k_dim + v_dim) * _BYTES_PER_KV_ELEMENT.get(kv_type, 2.0))


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
    model = engine.model_size + kv_cache_bytes(spec, params.num_ctx * params.num_parallel, params.kv_cache_type)
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
