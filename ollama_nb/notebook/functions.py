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

def _backend(backend: Backend | None) -> Backend:
    return backend if backend is not None else backends.current()


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
    backend: Backend | None = None,
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
        model=model, messages=msgs, options=dict(options) if options else None, format=format,
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
    backend: Backend | None = None,
) -> GenerateResponse | Iterator[GenerateResponse]:
    """A plain completion of ``prompt`` (``raw=True`` skips the model's template); ``images``
    as for :func:`chat`."""
    return _backend(backend).generate(**_fields(
        model=model, prompt=prompt, suffix=suffix, system=system, options=dict(options) if options else None,
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
    backend: Backend | None = None,
) -> EmbedResponse:
    """Embedding vectors (L2-normalised), one per input."""
    return _backend(backend).embed(**_fields(
        model=model, input=input if isinstance(input, str) else list(input), dimensions=dimensions,
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

    Columns: model, prompt, reply, then the timing columns every table shares
    (``ollama_nb.base.timings.COLUMNS``: token counts, tokens per second, and ``ttft_s``,
    ``load_s``, ``queue_s``, ``prompt_eval_s``, ``eval_s``, ``total_s`` in seconds). The time to
    first token runs from the request's arrival and includes any load; for a remote server, whose
    replies do not report it, it is measured here, on the caller's side.
    """
    import pandas as pd


    model_list = [models] if isinstance(models, str) else list(models)
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    target = _backend(backend)
    rows = []
    for prompt in prompt_list:
        for model in model_list:
            started = time.perf_counter_ns()
            chunks = target.chat(model=model, messages=_messages(None, prompt, system),
                                 options=dict(options) if options else None, stream=True)
            result = backends.read_reply(chunks, model=model, started_ns=started)
            if result.interrupted:  # a kernel interrupt (or a dropped stream) ends the comparison
                raise KeyboardInterrupt(f"comparison stopped at {model!r}")
            result.prompt = prompt
            rows.append(result.row())
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


__all__ = ["chat", "compare", "embed", "generate"]
