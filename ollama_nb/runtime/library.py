"""The llama.cpp library itself: imported on first use (``import ollama_nb`` stays fast), plus
the few whole-library functions we need (build facts, quantization, grammars, Jinja templates).
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import math
from typing import Any

from ..base.errors import InvalidRequest, OllamaNbError

_llama_cpp: Any = None
_native_log = logging.getLogger("ollama_nb.llama_cpp")
_log_callback: Any = None  # kept alive: llama.cpp holds a raw pointer to it
_GGML_LOG_LEVEL_ERROR = 4  # ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


def lib() -> Any:
    """Import llama_cpp on first use so ``import ollama_nb`` stays fast."""
    global _llama_cpp
    if _llama_cpp is None:
        import llama_cpp

        _route_native_logs(llama_cpp)
        _llama_cpp = llama_cpp
    return _llama_cpp


def _route_native_logs(llama_cpp: Any) -> None:
    """Send llama.cpp's own log lines to Python logging instead of the process's stderr.

    llama-cpp-python's callback prints some of them even with ``verbose=False`` (e.g. the SWA
    cache notice on every gemma3 load), and in a notebook stderr lands in the cell's output.
    Errors stay visible as ERROR records; everything else is DEBUG (shown with OLLAMA_DEBUG=1).
    """
    global _log_callback

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: Any) -> None:
        message = text.decode("utf-8", "replace").rstrip()
        if message:
            _native_log.log(logging.ERROR if level == _GGML_LOG_LEVEL_ERROR else logging.DEBUG, "%s", message)

    _log_callback = forward
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


def supports_gpu_offload() -> bool:
    """Whether the installed llama.cpp build has a GPU backend (a build fact, not free VRAM)."""
    return bool(lib().llama_supports_gpu_offload())


def system_info() -> str:
    return lib().llama_print_system_info().decode("utf-8", "replace").strip()


#: Integer ranges up to this many values are spelled out for the grammar.
MAX_ENUMERATED_RANGE = 1000


def _bounded_integers_as_enums(schema: Any) -> Any:
    """The schema with every small bounded integer (``minimum``/``maximum``, exclusive or not)
    turned into the ``enum`` of its values.

    llama-cpp-python's schema converter ignores integer bounds, so ``age: int = Field(le=120)``
    could come back as 123 and fail the caller's own validation; llama.cpp's C++ converter, the
    one Ollama uses, enforces them. An enum is something the Python converter does enforce.
    """
    if isinstance(schema, list):
        return [_bounded_integers_as_enums(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _bounded_integers_as_enums(value) for key, value in schema.items()}
    if out.get("type") != "integer" or "enum" in out:
        return out
    low = out.get("minimum")
    if isinstance(out.get("exclusiveMinimum"), (int, float)) and not isinstance(out["exclusiveMinimum"], bool):
        low = out["exclusiveMinimum"] + 1 if low is None else max(low, out["exclusiveMinimum"] + 1)
    high = out.get("maximum")
    if isinstance(out.get("exclusiveMaximum"), (int, float)) and not isinstance(out["exclusiveMaximum"], bool):
        high = out["exclusiveMaximum"] - 1 if high is None else min(high, out["exclusiveMaximum"] - 1)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        return out
    first, last = math.ceil(low), math.floor(high)
    if first > last or last - first >= MAX_ENUMERATED_RANGE:
        return out
    kept = {k: v for k, v in out.items()
            if k not in {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}}
    return {**kept, "enum": list(range(first, last + 1))}


def json_grammar(fmt: str | dict[str, Any] | None) -> str | None:
    """GBNF for Ollama's ``format``: ``"json"`` or a JSON schema object (via llama.cpp's converter)."""
    if fmt is None or fmt == "":
        return None
    from llama_cpp import llama_grammar

    if fmt == "json":
        return llama_grammar.JSON_GBNF
    if isinstance(fmt, dict):
        try:
            return llama_grammar.json_schema_to_gbnf(json.dumps(_bounded_integers_as_enums(fmt)))
        except Exception as exc:  # the converter raises bare Exceptions on unsupported schemas
            raise InvalidRequest(f"invalid JSON schema in format: {exc}") from exc
    if isinstance(fmt, str):
        try:
            return json_grammar(json.loads(fmt))
        except json.JSONDecodeError:
            pass
    raise InvalidRequest(f"invalid format: {fmt!r}; expected \"json\" or a JSON schema object")


def render_jinja_chat(
    template: str,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    extra: dict[str, Any] | None = None,
) -> str:
    """Render a GGUF (Hugging Face) Jinja chat template the way llama-cpp-python does."""
    try:
        formatter = _jinja_formatter(template, eos_token, bos_token, add_generation_prompt)
        return formatter(messages=messages, tools=tools or None, **(extra or {})).prompt
    except Exception as exc:  # jinja2 raises many types; all mean "this template can't render"
        raise InvalidRequest(f"template error: {exc}") from exc


@functools.lru_cache(maxsize=16)
def _jinja_formatter(template: str, eos_token: str, bos_token: str, add_generation_prompt: bool) -> Any:
    """A compiled chat template, kept: compiling SmolLM2's took 3.5 ms, most of the time to the
    first token of a prompt the cache already holds, and a formatter keeps no state between
    renders."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(
        template=template, eos_token=eos_token, bos_token=bos_token, add_generation_prompt=add_generation_prompt
    )


def quantize(src: str, dst: str, ftype: int, *, threads: int = 0) -> None:
    """Requantise a GGUF with llama.cpp's own quantizer (what ``ollama create -q`` does)."""
    lc = lib()
    params = lc.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    rc = lc.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise OllamaNbError(f"quantization failed (llama.cpp returned {rc})")
