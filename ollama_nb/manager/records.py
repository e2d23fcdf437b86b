"""What one finished request cost: the row that metrics, ``/metrics``, the dashboard and the
notebook plots all share, so a plot and a Prometheus counter can never disagree.

The manager hands one :class:`RequestRecord` to each of its observers when a generate, chat or
embed request completes. Its :class:`~ollama_nb.base.timings.Timings` is the very object the
request's API reply carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base.timings import Timings

#: The columns of :meth:`RequestRecord.as_row`, in order.
RECORD_COLUMNS = ("started_at", "endpoint", "model", "done_reason")


@dataclass(frozen=True)
class RequestRecord:
    """One request: what was asked of which model, when (Unix seconds), how it ended, and its
    timings."""

    endpoint: str
    model: str
    started_at: float
    timings: Timings
    done_reason: str | None = None

    def as_row(self) -> dict[str, Any]:
        """A flat dict (one DataFrame row): the record's columns, then the timing columns."""
        return {**{k: getattr(self, k) for k in RECORD_COLUMNS}, **self.timings.row()}
