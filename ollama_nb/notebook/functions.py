"""Plain functions for notebooks: ``ollama_nb.chat``, ``generate``, ``embed`` and ``compare``.

Thin, typed wrappers over whichever backend the notebook uses (this kernel's models, or the
server named by ``%ollama connect``), returning the same pydantic types as the HTTP API, so code
written here ports to the ``ollama`` client unchanged. ``compare`` runs one or more prompts on
several models, one after the other (they share the CPU/GPU, and parallel runs would distort
each other's timings), and returns a pandas DataFrame ready to sort or plot
(``ollama_nb.plots.compare_figure``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import connection as backends
from .display import ROW_COLUMNS
from .images import images_base64

if TYPE_CHECKING:
    import pandas as pd

    from ..api.types import ChatResponse, EmbedResponse, GenerateResponse, Message
    from .connection import Backend

def _backend(backend: Backend | str | None) -> Backend:
    """A backend object as given, else what the faces use (a name picks a backend: see
    :func:`_model`)."""
    return backend if backend is not None and not isinstance(backend, str) else backends.current()


def _model(model: str, backend: Backend | str | None) -> str:
    """``backend="gpu"`` is the same as naming the model ``gpu/model``."""
    from ..backends.settings import LOCAL

    if not isinstance(backend, str) or backend == LOCAL or model.startswith(f"{backend}/"):
        return model
    backends.router().entry(backend)
    return f"{backend}/{model}"


def connect(name: str, url: str, *, kind: str = "ollama", api_key_env: str | None = None,
            timeout: float | None = None) -> None:
    """Register a backend: its models are then ``NAME/model`` in every face (magics, widgets,
    these functions, and the kernel's server when it routes). ``kind`` is ``ollama`` or
    ``openai`` (vLLM, SGLang, llama-server, LM Studio, ...); the API key is read from the
    environment variable ``api_key_env`` at each request, never stored.

    >>> ollama_nb.connect("gpu", "http://gpu-box:11434")
    >>> ollama_nb.chat("gpu/llama3.1:70b", "Hello")
    """
    backends.register(name, url, kind=kind, api_key_env=api_key_env, timeout=timeout)


def disconnect(name: str) -> bool:
    """Remove a backend registered with :func:`connect`; False when there was none."""
    return backends.unregister(name)


def list_backends() -> pd.DataFrame:
    """Every backend (this kernel's first) with its health, model count and latency."""
    from .display import backends_table

    return backends_table(backends.router().health())


def _messages(messages: str | Sequence[Any] | None, prompt: str | None, system: str | None) -> list[Any]:
    out: list[Any] = []
    if system:
        out.append({"role": "system", "content": system})
    if isinstance(messages, str):
        out.append({"role": "user", "content": messages})
    elif messages:
        out.extend(m.to_dict() if hasattr(m, "to_dict") else dict(m) for m in messages)
    if prompt:
        out.append({"role": "user", "content": prompt})
    return out


def _fields(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def chat(
    model: str,
    messages: str | Sequence[Message | Mapping[str, Any]] | None = None,
    *,
    prompt: str | None = None,
    system: str | None = None,
    options: Mapping[str, Any] | None = None,
    format: str | dict[str, Any] | None = None,
    tools: Sequence[Any] | None = None,
    think: bool | str | None = None,
    images: Any = None,
    keep_alive: float | str | None = None,
    stream: bool = False,
    backend: Backend | str | None = None,
) -> ChatResponse | Iterator[ChatResponse]:
    """One chat turn. ``messages`` is a list of messages, or just the user's text. ``images``
    (a path, bytes, a PIL image, or a list of them) go with the last user message, for a model
    with vision.

    >>> ollama_nb.chat("smollm2:135m", "Say hi", options={"num_predict": 8}).message.content
    """
    msgs = _messages(messages, prompt, system)
    if images is not None:
        last = next((m for m in reversed(msgs) if m.get("role") == "user"), None)
        if last is None:
            raise ValueError("images need a user message to go with")
        last["images"] = [*(last.get("images") or []), *images_base64(images)]
    return _backend(backend).chat(**_fields(
        model=_model(model, backend), messages=msgs, options=dict(options) if options else None, format=format,
        tools=list(tools) if tools else None, think=think, keep_alive=keep_alive), stream=stream)


def generate(
    model: str,
    prompt: str = "",
    *,
    suffix: str | None = None,
    system: str | None = None,
    raw: bool = False,
    options: Mapping[str, Any] | None = None,
    format: str | dict[str, Any] | None = None,
    context: Sequence[int] | None = None,
    images: Any = None,
    keep_alive: float | str | None = None,
    stream: bool = False,
    backend: Backend | str | None = None,
) -> GenerateResponse | Iterator[GenerateResponse]:
    """A plain completion of ``prompt`` (``raw=True`` skips the model's template); ``images``
    as for :func:`chat`."""
    return _backend(backend).generate(**_fields(
        model=_model(model, backend), prompt=prompt, suffix=suffix, system=system, options=dict(options) if options else None,
        format=format, context=list(context) if context else None, images=images_base64(images) or None,
        keep_alive=keep_alive), raw=raw, stream=stream)


def embed(
    model: str,
    input: str | Sequence[str],
    *,
    truncate: bool = True,
    dimensions: int | None = None,
    options: Mapping[str, Any] | None = None,
    keep_alive: float | str | None = None,
    backend: Backend | str | None = None,
) -> EmbedResponse:
    """Embedding vectors (L2-normalised), one per input."""
    return _backend(backend).embed(**_fields(
        model=_model(model, backend), input=input if isinstance(input, str) else list(input), dimensions=dimensions,
        options=dict(options) if options else None, keep_alive=keep_alive), truncate=truncate)


def compare(
    models: str | Sequence[str],
    prompts: str | Sequence[str],
    options: Mapping[str, Any] | None = None,
    *,
    system: str | None = None,
    backend: Backend | None = None,
) -> pd.DataFrame:
    """Every prompt on every model: one row each, with the reply and its timings.

    Models may run on different backends (``smollm2:135m`` here, ``gpu/llama3.1:70b`` on a
    server, ``vllm/Qwen/Qwen2.5-72B`` on an OpenAI-compatible engine); every row has the same
    columns. Columns: model, prompt, reply, then the timing columns every table shares
    (``ollama_nb.base.timings.COLUMNS``: token counts, tokens per second, and ``ttft_s``,
    ``load_s``, ``queue_s``, ``prompt_eval_s``, ``eval_s``, ``total_s`` in seconds, and
    ``timed_by``), then ``error``. The time to first token runs from the request's arrival and
    includes any load; where a backend does not report a number it is measured here (``timed_by``
    names those columns) or left empty. A backend that fails gives a row with its one-line
    ``error`` (and the partial reply, if it broke off mid-way); the other models still run.
    """
    import pandas as pd

    from ..base.errors import OllamaNbError
    from .display import ChatResult, error_line

    model_list = [models] if isinstance(models, str) else list(models)
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    target = _backend(backend)
    rows = []
    for prompt in prompt_list:
        for model in model_list:
            started = time.perf_counter_ns()
            try:
                chunks = target.chat(model=model, messages=_messages(None, prompt, system),
                                     options=dict(options) if options else None, stream=True)
            except OllamaNbError as exc:
                result = ChatResult(text="", model=model, interrupted=True, error=error_line(exc))
            else:
                result = backends.read_reply(chunks, model=model, started_ns=started)
            if result.interrupted and result.error is None:  # a kernel interrupt ends the comparison
                raise KeyboardInterrupt(f"comparison stopped at {model!r}")
            result.prompt = prompt
            rows.append(result.row())
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


__all__ = ["chat", "compare", "connect", "disconnect", "embed", "generate", "list_backends"]
