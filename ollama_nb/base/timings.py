"""What one reply cost: the single timings value every face shows.

The manager makes one :class:`Timings` when a reply finishes and hands that same object to the
API response (whose Ollama fields are read off it), the request record (metrics, ``/metrics``,
the dashboard), the notebook's ``ChatResult`` and the plots. A remote Ollama's reply is read into
the same shape (:meth:`Timings.from_ollama`), so a local and a remote row line up.

Durations are integer nanoseconds, named as Ollama names them (``eval_duration``); the names a
table shows (:data:`COLUMNS`) are derived from them in seconds, once, here. ``queue_duration`` and
``ttft_duration`` are ours: Ollama does not report the wait for a busy model or the time to the
first token, and users compare exactly those.

A remote engine reports less: a remote Ollama has no time to first token, an OpenAI-compatible
engine reports token counts and (llama-server) prompt and generation times, or (vLLM) none. What
it does not report is either measured on the caller's side, and named in :attr:`Timings.client_side`,
or left out and named in :attr:`Timings.absent`; a table then shows ``None`` rather than a zero that
was never measured, and its ``timed_by`` column says which numbers were measured where.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["COLUMNS", "LABELS", "OLLAMA_FIELDS", "Timings"]

#: Ollama's timing fields, in the order its final chunk lists them (nanoseconds and counts).
OLLAMA_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)

#: The columns a table of replies shows (comparison table, metrics DataFrame, dashboard rows),
#: in order: counts, speeds, then the durations in seconds.
COLUMNS = (
    "prompt_eval_count",
    "eval_count",
    "tokens_per_second",
    "prompt_tokens_per_second",
    "ttft_s",
    "load_s",
    "queue_s",
    "prompt_eval_s",
    "eval_s",
    "total_s",
    "timed_by",
)

#: How a plot or a widget labels each column.
LABELS: dict[str, str] = {
    "prompt_eval_count": "prompt tokens",
    "eval_count": "tokens generated",
    "tokens_per_second": "tokens/s",
    "prompt_tokens_per_second": "prompt tokens/s",
    "ttft_s": "time to first token (s)",
    "load_s": "load time (s)",
    "queue_s": "queue wait (s)",
    "prompt_eval_s": "prompt eval time (s)",
    "eval_s": "generation time (s)",
    "total_s": "total time (s)",
    "timed_by": "timed by",
}

#: The field each table column is read from, for marking a column absent or measured here.
_SOURCE = {
    "prompt_eval_count": "prompt_eval_count", "eval_count": "eval_count",
    "tokens_per_second": "eval_duration", "prompt_tokens_per_second": "prompt_eval_duration",
    "ttft_s": "ttft_duration", "load_s": "load_duration", "queue_s": "queue_duration",
    "prompt_eval_s": "prompt_eval_duration", "eval_s": "eval_duration", "total_s": "total_duration",
}


@dataclass(frozen=True, slots=True)
class Timings:
    """Counts and nanosecond durations of one reply.

    ``load_duration`` is the wait for the model to be resident (0 when it already was),
    ``queue_duration`` the wait for the model's worker behind other requests, ``ttft_duration``
    the time from arrival to the first streamed token (None when no token came, or when the
    reply was not streamed to us, so nobody saw a first token).
    """

    total_duration: int = 0
    load_duration: int = 0
    queue_duration: int = 0
    ttft_duration: int | None = None
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    #: Fields measured by the caller (the kernel) rather than by the engine that ran the model.
    client_side: tuple[str, ...] = ()
    #: Fields nobody measured (the engine does not report them, and they cannot be seen from here).
    absent: tuple[str, ...] = ()

    @classmethod
    def from_ollama(cls, reply: Any, *, ttft_duration: int | None = None) -> Timings:
        """Read Ollama's fields off a final chunk: a dict, a pydantic or ollama-python object.
        Missing or null fields (Go's ``omitempty`` drops zeros) read as 0."""
        get = reply.get if isinstance(reply, Mapping) else (lambda k: getattr(reply, k, None))
        return cls(ttft_duration=ttft_duration, **{k: int(get(k) or 0) for k in OLLAMA_FIELDS})

    # ---- derived ---------------------------------------------------------------------------

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed; None when nothing was generated."""
        return _rate(self.eval_count, self.eval_duration)

    @property
    def prompt_tokens_per_second(self) -> float | None:
        return _rate(self.prompt_eval_count, self.prompt_eval_duration)

    @property
    def ttft_s(self) -> float | None:
        return None if self.ttft_duration is None else self.ttft_duration / 1e9

    @property
    def load_s(self) -> float:
        return self.load_duration / 1e9

    @property
    def queue_s(self) -> float:
        return self.queue_duration / 1e9

    @property
    def prompt_eval_s(self) -> float:
        return self.prompt_eval_duration / 1e9

    @property
    def eval_s(self) -> float:
        return self.eval_duration / 1e9

    @property
    def total_s(self) -> float:
        return self.total_duration / 1e9

    # ---- shapes ----------------------------------------------------------------------------

    @property
    def timed_by(self) -> str:
        """``engine`` when the engine that ran the model measured every number shown, else
        ``client-side: ...`` naming the columns measured here, on the caller's side."""
        here = [c for c, f in _SOURCE.items() if f in self.client_side]
        return f"client-side: {', '.join(here)}" if here else "engine"

    def ollama_fields(self) -> dict[str, int]:
        """The fields of Ollama's final chunk (``total_duration`` ... ``eval_duration``)."""
        return {k: getattr(self, k) for k in OLLAMA_FIELDS}

    def row(self) -> dict[str, Any]:
        """One table row's timing part: :data:`COLUMNS`, in order."""
        return {k: None if _SOURCE.get(k) in self.absent else getattr(self, k) for k in COLUMNS}

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-safe: the nanosecond fields plus the derived speeds (notebook output
        metadata, so a saved notebook records how fast each reply was)."""
        data = asdict(self)
        data["client_side"] = list(self.client_side)
        data["absent"] = list(self.absent)
        data["timed_by"] = self.timed_by
        data["tokens_per_second"] = self.tokens_per_second
        data["prompt_tokens_per_second"] = self.prompt_tokens_per_second
        return data


def _rate(count: int, duration_ns: int) -> float | None:
    return count / (duration_ns / 1e9) if count and duration_ns else None

