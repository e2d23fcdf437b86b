"""The runtime: everything that touches llama.cpp lives in this package, and nothing else in
ollama_nb imports ``llama_cpp``.

``engine`` runs one loaded model (batch loop, KV cache, embeddings), ``sequence`` one request
inside it, ``sampling`` its sampler chain and stop strings, ``jobs`` the plain data that crosses
the worker boundary, ``library`` the library-wide calls (import, build facts, quantize, grammars,
Jinja chat templates).
"""

from .engine import Engine
from .jobs import (
    GenerationJob,
    GenerationRequest,
    GenerationResult,
    LoadParams,
    SamplingParams,
    TokenPiece,
)
from .library import (
    json_grammar,
    quantize,
    render_jinja_chat,
    supports_gpu_offload,
    system_info,
)

__all__ = [
    "Engine",
    "GenerationJob",
    "GenerationRequest",
    "GenerationResult",
    "LoadParams",
    "SamplingParams",
    "TokenPiece",
    "json_grammar",
    "quantize",
    "render_jinja_chat",
    "supports_gpu_offload",
    "system_info",
]
