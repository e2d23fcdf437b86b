"""What one finished request cost: the row that metrics, ``/metrics``, the dashboard and the
notebook plots all share, so a plot and a Prometheus counter can never disagree.

The manager hands one :class:`RequestRecord` to each of its observers when a generate, chat or
embed request completes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RequestRecord:
    """Timings of one request, in nanoseconds as Ollama reports them.

    ``queue_ns`` is the wait for the model's worker (other requests ahead of this one);
    ``load_ns`` the wait for the model to be resident (0 when it already was); ``ttft_ns`` the
    time from arrival to the first streamed token (None when none was produced).
    """

    endpoint: str
    model: str
    started_at: float  # Unix time, seconds
    total_ns: int
    load_ns: int = 0
    queue_ns: int = 0
    ttft_ns: int | None = None
    prompt_eval_count: int = 0
    prompt_eval_ns: int = 0
    eval_count: int = 0
    eval_ns: int = 0
    done_reason: str | None = None

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed; None when nothing was generated."""
        return self.eval_count / (self.eval_ns / 1e9) if self.eval_count and self.eval_ns else None

    @property
    def prompt_tokens_per_second(self) -> float | None:
        if not self.prompt_eval_count or not self.prompt_eval_ns:
            return None
        return self.prompt_eval_count / (self.prompt_eval_ns / 1e9)

    def as_row(self) -> dict[str, Any]:
        """A flat dict (one DataFrame row), with the derived speeds included."""
        row = asdict(self)
        row["tokens_per_second"] = self.tokens_per_second
        row["prompt_tokens_per_second"] = self.prompt_tokens_per_second
        return row
