"""The child process of :func:`ollama_nb.runtime.vision.check_projector`: load a projector for
a text model (its vocabulary and sizes only, no weights) and encode one small image. Prints
``PROJECTOR OK`` when all of it worked; a file llama.cpp chokes on kills this process, not the
kernel.
"""

from __future__ import annotations

import ctypes
import sys


def main(projector: str, text_model: str) -> int:
    import llama_cpp
    from llama_cpp import mtmd_cpp as mtmd

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(text_model.encode(), params)
    if not model:
        print(f"error: the text model {text_model} does not load", file=sys.stderr)
        return 1
    ctx_params = mtmd.mtmd_context_params_default()
    ctx_params.use_gpu = False
    ctx_params.n_threads = 1
    ctx_params.warmup = False
    ctx = mtmd.mtmd_init_from_file(projector.encode(), model, ctx_params)
    if not ctx:
        print("error: failed to load the projector", file=sys.stderr)
        return 1
    if not mtmd.mtmd_support_vision(ctx):
        print("error: the projector has no vision encoder", file=sys.stderr)
        return 1
    side = 16
    pixels = (ctypes.c_uint8 * (side * side * 3))(*([127] * (side * side * 3)))
    bitmap = mtmd.mtmd_bitmap_init(side, side, pixels)
    marker = mtmd.mtmd_default_marker()
    text = mtmd.mtmd_input_text()
    text.text, text.text_len, text.add_special, text.parse_special = marker, len(marker), False, True
    chunks = mtmd.mtmd_input_chunks_init()
    array = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
    if mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), array, 1) != 0:
        print("error: the projector could not prepare an image", file=sys.stderr)
        return 1
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        if mtmd.mtmd_input_chunk_get_type(chunk) != 0 and mtmd.mtmd_encode_chunk(ctx, chunk) != 0:
            print("error: the projector could not encode an image", file=sys.stderr)
            return 1
    print("PROJECTOR OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
