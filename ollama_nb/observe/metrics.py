"""Every request's timings, kept so they can be counted, scraped, plotted and streamed.

One :class:`MetricsRecorder` watches a manager (``recorder.watch(manager)``, or the server's
``setup_metrics``) and receives one :class:`~ollama_nb.manager.records.RequestRecord` per finished
generate/chat/embed request, from whichever thread finished it. It keeps:

* a bounded ring buffer of records, each numbered with a sequence number, so a dashboard can ask
  for "everything after #41" and never miss or repeat a row (``rows(since=41)``);
* Prometheus counters, histograms and gauges in a private ``CollectorRegistry`` (never the
  process-global one: two servers in one kernel must not share or clash over metric names),
  plus a scrape-time view of the loaded models;
* listeners, called for each new record (the dashboard's event stream).

pandas is imported only by :meth:`MetricsRecorder.to_dataframe`, so recording costs no import.
"""

from __future__ import annotations

import datetime as _dt
import logging
import statistics
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from ..base.timings import COLUMNS as TIMING_COLUMNS
from ..manager.records import RECORD_COLUMNS, RequestRecord

if TYPE_CHECKING:
    import pandas as pd

    from ..api.types import ProcessResponse
    from ..manager.core import ModelManager

log = logging.getLogger("ollama_nb.metrics")

__all__ = ["COLUMNS", "CONTENT_TYPE", "PREFIX", "MetricsRecorder", "row_of"]

PREFIX = "ollama_nb"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4; charset=utf-8

# Latencies of a notebook LLM span milliseconds (a warm 135M model) to minutes (a cold 70B load).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            float("inf"))

#: Columns of :meth:`MetricsRecorder.to_dataframe`, in order (also when it is empty): the
#: sequence number and local time, the record's own columns, then the one timing column list.
COLUMNS = ("seq", "time", *RECORD_COLUMNS, *TIMING_COLUMNS)

_DTYPES = {
    "seq": "int64", "started_at": "float64", "endpoint": "object", "model": "object",
    "done_reason": "object", "prompt_eval_count": "Int64", "eval_count": "Int64",  # a remote may not count
    "timed_by": "object",
    **{c: "float64" for c in TIMING_COLUMNS if c not in ("prompt_eval_count", "eval_count", "timed_by")},  # None -> NaN
}

Listener = Callable[[int, RequestRecord], None]


class _LoadedModels:
    """Collected at scrape time: what is resident now, from ``manager.ps()``."""

    def __init__(self, recorder: MetricsRecorder) -> None:
        self._recorder = recorder

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(f"{PREFIX}_loaded_models", "Models loaded in memory now")]

    def collect(self) -> Iterator[Metric]:
        source = self._recorder.loaded_models
        models = []
        if source is not None:
            try:
                models = source().models
            except Exception:  # a scrape must not fail because ps() did
                log.exception("listing loaded models for /metrics failed")
        yield GaugeMetricFamily(f"{PREFIX}_loaded_models", "Models loaded in memory now", value=len(models))
        size = GaugeMetricFamily(f"{PREFIX}_loaded_model_size_bytes",
                                 "Memory used by a loaded model (weights and context)", labels=["model"])
        vram = GaugeMetricFamily(f"{PREFIX}_loaded_model_vram_bytes",
                                 "Part of a loaded model's memory on the GPU", labels=["model"])
        for m in models:
            size.add_metric([m.name], m.size)
            vram.add_metric([m.name], m.size_vram)
        yield size
        yield vram


class MetricsRecorder:
    """A thread-safe ring buffer of request records with Prometheus metrics beside it.

    ``maxlen`` bounds memory (the oldest rows fall off; the Prometheus counters keep counting).
    ``loaded_models`` is a callable returning a ``ProcessResponse`` (``manager.ps``), read at each
    scrape for the loaded-models gauges; :meth:`watch` sets it.
    """

    def __init__(self, maxlen: int = 10_000, *,
                 loaded_models: Callable[[], ProcessResponse] | None = None) -> None:
        self._lock = threading.Lock()
        self._buffer: deque[tuple[int, RequestRecord]] = deque(maxlen=maxlen)
        self._seq = 0
        self._listeners: list[Listener] = []
        self.loaded_models = loaded_models
        self.registry = CollectorRegistry()
        self._define_metrics()

    def _define_metrics(self) -> None:
        reg, p = self.registry, PREFIX
        by_endpoint = ["model", "endpoint"]
        self._requests = Counter(f"{p}_requests", "Completed requests", by_endpoint, registry=reg)
        self._prompt_tokens = Counter(f"{p}_prompt_tokens", "Prompt tokens evaluated", by_endpoint,
                                      registry=reg)
        self._generated_tokens = Counter(f"{p}_generated_tokens", "Tokens generated", by_endpoint,
                                         registry=reg)

        def histogram(name: str, doc: str, labels: list[str]) -> Histogram:
            return Histogram(f"{p}_{name}_seconds", doc, labels, buckets=_BUCKETS, registry=reg)

        self._duration = histogram("request_duration", "Whole request, arrival to last token", by_endpoint)
        self._ttft = histogram("time_to_first_token", "Arrival to first streamed token", ["model"])
        self._load = histogram("load_duration", "Wait for the model to be loaded (0 when resident)",
                               ["model"])
        self._queue = histogram("queue_wait", "Wait for the model's worker behind other requests",
                                ["model"])
        self._prompt_eval = histogram("prompt_eval_duration", "Prompt evaluation (prefill)", ["model"])
        self._eval = histogram("eval_duration", "Token generation (decode)", ["model"])
        self._tps = Gauge(f"{p}_tokens_per_second", "Generation speed of the model's last request",
                          ["model"], registry=reg)
        reg.register(_LoadedModels(self))

    # ---- recording ----------------------------------------------------------------------------

    def record(self, r: RequestRecord) -> None:
        """Observer for ``manager.observers``; safe to call from any thread."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._buffer.append((seq, r))
            listeners = list(self._listeners)
        self._observe(r)
        for listener in listeners:
            try:
                listener(seq, r)
            except Exception:
                log.exception("metrics listener failed")

    def _observe(self, r: RequestRecord) -> None:
        model, endpoint, t = r.model, r.endpoint, r.timings
        self._requests.labels(model, endpoint).inc()
        self._prompt_tokens.labels(model, endpoint).inc(t.prompt_eval_count)
        self._generated_tokens.labels(model, endpoint).inc(t.eval_count)
        self._duration.labels(model, endpoint).observe(t.total_s)
        self._load.labels(model).observe(t.load_s)
        self._queue.labels(model).observe(t.queue_s)
        if t.ttft_s is not None:
            self._ttft.labels(model).observe(t.ttft_s)
        if t.prompt_eval_count:
            self._prompt_eval.labels(model).observe(t.prompt_eval_s)
        if t.eval_count:
            self._eval.labels(model).observe(t.eval_s)
        if t.tokens_per_second is not None:
            self._tps.labels(model).set(t.tokens_per_second)

    def watch(self, manager: ModelManager) -> Callable[[], None]:
        """Record ``manager``'s requests (once, however often called); returns the undo."""
        if self.loaded_models is None:
            self.loaded_models = manager.ps
        added = self.record not in manager.observers
        if added:
            manager.observers.append(self.record)

        def unwatch() -> None:
            if added and self.record in manager.observers:
                manager.observers.remove(self.record)

        return unwatch

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(seq, record)`` for every new record (on the recording thread)."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def clear(self) -> None:
        """Forget the buffered rows (sequence numbers and Prometheus counters go on)."""
        with self._lock:
            self._buffer.clear()

    # ---- reading ------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record (0 before the first)."""
        with self._lock:
            return self._seq

    def records(self, since: int = 0) -> list[RequestRecord]:
        """Buffered records newer than sequence number ``since``, oldest first."""
        return [r for _, r in self.numbered(since)]

    def numbered(self, since: int = 0) -> list[tuple[int, RequestRecord]]:
        """``(seq, record)`` pairs newer than ``since``, oldest first."""
        with self._lock:
            return [(s, r) for s, r in self._buffer if s > since]

    def rows(self, since: int = 0) -> list[dict[str, Any]]:
        """JSON-ready rows (``RequestRecord.as_row()`` plus ``seq``) newer than ``since``."""
        return [row_of(seq, r) for seq, r in self.numbered(since)]

    def summary(self) -> list[dict[str, Any]]:
        """Per-model aggregates over the buffered rows, computed without pandas."""
        groups: dict[str, list[RequestRecord]] = {}
        for r in self.records():
            groups.setdefault(r.model, []).append(r)
        out = []
        for model, recs in groups.items():
            timings = [r.timings for r in recs]
            speeds = [t.tokens_per_second for t in timings if t.tokens_per_second is not None]
            ttfts = [t.ttft_s * 1e3 for t in timings if t.ttft_s is not None]
            out.append({
                "model": model,
                "requests": len(recs),
                "prompt_tokens": sum(t.prompt_eval_count for t in timings),
                "generated_tokens": sum(t.eval_count for t in timings),
                "mean_tokens_per_second": statistics.fmean(speeds) if speeds else None,
                "last_tokens_per_second": speeds[-1] if speeds else None,
                "median_ttft_ms": statistics.median(ttfts) if ttfts else None,
                "max_load_ms": max(t.load_s * 1e3 for t in timings),
                "total_seconds": sum(t.total_s for t in timings),
            })
        return out

    def to_dataframe(self, since: int = 0) -> pd.DataFrame:
        """One row per buffered request, durations in seconds, with ``time`` (local, naive) for
        plotting. Columns are :data:`COLUMNS`."""
        import pandas as pd

        rows = [row_of(seq, r) for seq, r in self.numbered(since)]
        frame = pd.DataFrame(rows).reindex(columns=list(COLUMNS)).astype(_DTYPES)
        local = _dt.datetime.now().astimezone().tzinfo
        stamps = pd.to_datetime(pd.to_numeric(frame["started_at"]), unit="s", utc=True)
        frame["time"] = stamps.dt.tz_convert(local).dt.tz_localize(None)
        return frame

    def summary_frame(self) -> pd.DataFrame:
        """:meth:`summary` as a DataFrame indexed by model."""
        import pandas as pd

        rows = self.summary()
        return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()

    def prometheus_text(self) -> bytes:
        """The registry in Prometheus' text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def row_of(seq: int, r: RequestRecord) -> dict[str, Any]:
    """One record as a flat JSON-ready dict, numbered."""
    return {"seq": seq, **r.as_row()}
