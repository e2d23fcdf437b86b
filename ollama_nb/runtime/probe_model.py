"""A tiny llama-architecture GGUF that the CPU probe runs instead of a user's model.

Why not probe with the model being loaded: it may be 40 GB, and its prompt would take minutes on
a CPU; this one is 2 MB and decodes in milliseconds, on any machine, with no model installed.
What it must have is the shapes and quantization types that send llama.cpp's CPU backend down
its extra buffer types: Q4_0, Q8_0, Q4_K and Q6_K weights (the types of Ollama's usual
Q4_0/Q4_K_M/Q8_0 models) whose rows and columns are multiples of 256, so that AMX
(``ggml-cpu/amx``) and weight repacking (``ggml-cpu/repack``) both take them. The weights are
random, with their scales set small so activations stay finite; the vocabulary is llama.cpp's
"none" kind, because the probe feeds token ids directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EMBEDDING = 256
FEED_FORWARD = 512
HEADS = 4
HEADS_KV = 2
LAYERS = 2
VOCAB = 512
CONTEXT = 512

# Block layouts (ggml-common.h): values per block, bytes per block, and where each f16 scale
# sits with the value it gets. Every other byte is random quants, which are all valid.
_BLOCKS = {
    "Q4_0": (32, 18, ((0, 0.01),)),
    "Q8_0": (32, 34, ((0, 0.0005),)),
    "Q4_K": (256, 144, ((0, 0.0002), (2, 0.0002))),
    "Q6_K": (256, 210, ((208, 0.00002),)),
}

# One weight of each kind per layer, the types rotating between layers, so that every type meets
# every shape (square attention, wide and tall feed-forward matrices).
_LAYER_WEIGHTS = (
    ("attn_q", EMBEDDING, EMBEDDING),
    ("attn_k", EMBEDDING, EMBEDDING * HEADS_KV // HEADS),
    ("attn_v", EMBEDDING, EMBEDDING * HEADS_KV // HEADS),
    ("attn_output", EMBEDDING, EMBEDDING),
    ("ffn_gate", EMBEDDING, FEED_FORWARD),
    ("ffn_up", EMBEDDING, FEED_FORWARD),
    ("ffn_down", FEED_FORWARD, EMBEDDING),
)
_TYPES = ("Q4_0", "Q4_K", "Q8_0", "Q6_K")


def _quantized(rng: np.random.Generator, kind: str, columns: int, rows: int) -> np.ndarray:
    """Random blocks of ``kind`` for a ``rows`` x ``columns`` matrix (ggml's ne0 = columns)."""
    per_block, size, scales = _BLOCKS[kind]
    blocks = rng.integers(0, 256, size=(rows, columns // per_block, size), dtype=np.uint8)
    for offset, value in scales:
        scale = np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)
        blocks[:, :, offset : offset + 2] = scale
    return blocks.reshape(rows, -1)


def write_probe_model(path: Path, *, seed: int = 0) -> Path:
    """Write the probe model to ``path`` and return it."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("ollama_nb cpu probe")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBEDDING)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_block_count(LAYERS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS_KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(EMBEDDING // HEADS)
    writer.add_vocab_size(VOCAB)
    writer.add_tokenizer_model("none")

    def add(name: str, kind: str, columns: int, rows: int) -> None:
        qtype = getattr(gguf.GGMLQuantizationType, kind)
        writer.add_tensor(name, _quantized(rng, kind, columns, rows), raw_dtype=qtype)

    ones = np.ones(EMBEDDING, dtype=np.float32)
    add("token_embd.weight", "Q8_0", EMBEDDING, VOCAB)
    for layer in range(LAYERS):
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{layer}.ffn_norm.weight", ones)
        for i, (weight, columns, rows) in enumerate(_LAYER_WEIGHTS):
            add(f"blk.{layer}.{weight}.weight", _TYPES[(i + layer) % len(_TYPES)], columns, rows)
    writer.add_tensor("output_norm.weight", ones)
    add("output.weight", "Q6_K", EMBEDDING, VOCAB)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
