"""A tiny vision projector for smollm2:135m, written with the ``gguf`` package: no small vision
model can be installed here, so the tests make one.

It is a real LLaVA-1.5 style projector (``clip.projector_type = "mlp"``) that llama.cpp's
multimodal loader accepts: a 56x56 image cut into 14x14 patches (16 image tokens), one ViT
block of width 32 with a class embedding and pre/post layer norms, then ``mm.0`` -> GELU ->
``mm.2`` into SmolLM2's 576-wide embeddings. The weights are random (seeded), so the model sees
noise, but different noise for different images, which is what the tests check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SIZE, PATCH, HIDDEN, HEADS, FF, MM_HIDDEN, TEXT_EMBD = 56, 14, 32, 2, 64, 64, 576
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2


def write_projector(path: Path, *, seed: int = 0, drop: tuple[str, ...] = (),
                    projector_type: str = "mlp", image_size_type: str = "uint32") -> Path:
    """Write the projector; ``drop`` leaves tensors out and the other knobs break it on purpose."""
    import gguf

    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float | None = None) -> np.ndarray:
        s = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        return (rng.standard_normal(shape) * s).astype(np.float32)

    ones = lambda n: np.ones(n, dtype=np.float32)
    zeros = lambda n: np.zeros(n, dtype=np.float32)
    n_pos = IMAGE_TOKENS + 1  # the patches and the class token
    tensors = {
        "v.patch_embd.weight": weight(HIDDEN, 3, PATCH, PATCH, scale=1.0 / np.sqrt(3 * PATCH * PATCH)),
        "v.patch_embd.bias": zeros(HIDDEN),
        "v.class_embd": weight(HIDDEN, scale=0.02),
        "v.position_embd.weight": weight(n_pos, HIDDEN, scale=0.02),
        "v.pre_ln.weight": ones(HIDDEN), "v.pre_ln.bias": zeros(HIDDEN),
        "v.post_ln.weight": ones(HIDDEN), "v.post_ln.bias": zeros(HIDDEN),
        "mm.0.weight": weight(MM_HIDDEN, HIDDEN), "mm.0.bias": zeros(MM_HIDDEN),
        "mm.2.weight": weight(TEXT_EMBD, MM_HIDDEN), "mm.2.bias": zeros(TEXT_EMBD),
    }
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        tensors[f"v.blk.0.{name}.weight"] = weight(HIDDEN, HIDDEN)
        tensors[f"v.blk.0.{name}.bias"] = zeros(HIDDEN)
    for name in ("ln1", "ln2"):
        tensors[f"v.blk.0.{name}.weight"] = ones(HIDDEN)
        tensors[f"v.blk.0.{name}.bias"] = zeros(HIDDEN)
    tensors.update({"v.blk.0.ffn_up.weight": weight(FF, HIDDEN), "v.blk.0.ffn_up.bias": zeros(FF),
                    "v.blk.0.ffn_down.weight": weight(HIDDEN, FF), "v.blk.0.ffn_down.bias": zeros(HIDDEN)})

    w = gguf.GGUFWriter(str(path), arch="clip")
    w.add_string("general.name", "tiny random projector for tests")
    w.add_uint32("general.file_type", 0)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_audio_encoder", False)
    w.add_string("clip.projector_type", projector_type)
    w.add_bool("clip.use_gelu", True)
    (w.add_int32 if image_size_type == "int32" else w.add_uint32)("clip.vision.image_size", IMAGE_SIZE)
    w.add_uint32("clip.vision.patch_size", PATCH)
    w.add_uint32("clip.vision.embedding_length", HIDDEN)
    w.add_uint32("clip.vision.feed_forward_length", FF)
    w.add_uint32("clip.vision.projection_dim", TEXT_EMBD)
    w.add_uint32("clip.vision.block_count", 1)
    w.add_uint32("clip.vision.attention.head_count", HEADS)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    w.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    w.add_array("clip.vision.feature_layer", [1])  # run the one block (LLaVA stops one early otherwise)
    for name, value in tensors.items():
        if name not in drop:
            w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def png(seed: int, side: int = 32) -> bytes:
    """A random RGB image as PNG bytes (Pillow)."""
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    return out.getvalue()
