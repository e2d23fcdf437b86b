"""One prompt, several models, side by side: each reply streams into its own column, and a
table below gets a row per model with its timings (the columns of ``ollama_nb.compare``).

The models run one after the other, not at once: on one CPU or GPU they would slow each other
down and the timings would compare nothing. Stop ends the current reply and skips the rest.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w

from ..connection import read_reply
from ..display import ROW_COLUMNS, error_line
from ..throttle import DEFAULT_INTERVAL
from ._common import Worker, installed_names, markdown_outputs, resolve_backend


class ComparisonView(w.VBox):
    """``ComparisonView(models=[...])`` in a cell shows the view; Run compares them."""

    def __init__(
        self,
        models: Sequence[str] | None = None,
        manager: Any = None,
        *,
        prompt: str = "",
        num_predict: int = 128,
        temperature: float = 0.0,
        options: Mapping[str, Any] | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.backend = resolve_backend(manager)
        self.interval = interval
        self.extra_options = dict(options or {})
        self.results: list[dict[str, Any]] = []
        self._worker = Worker("compare")

        names = installed_names(self.backend)
        chosen = list(models) if models is not None else names[:3]
        self.prompt = w.Textarea(value=prompt, placeholder="Prompt", layout=w.Layout(width="100%", height="64px"))
        self.models = w.SelectMultiple(options=sorted(set(names) | set(chosen)), value=tuple(chosen),
                                       description="Models", rows=min(6, max(2, len(names))))
        self.num_predict = w.BoundedIntText(value=num_predict, min=1, max=32768, description="Max tokens")
        self.temperature = w.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                         description="Temperature", readout_format=".2f")
        self.run = w.Button(description="Run", button_style="primary", icon="play")
        self.stop = w.Button(description="Stop", icon="stop", disabled=True)
        self.columns = w.HBox(layout=w.Layout(width="100%", align_items="flex-start"))
        self.summary = w.HTML()
        self.status = w.HTML()
        self.run.on_click(lambda _: self.start())
        self.stop.on_click(lambda _: self._worker.stop())
        super().__init__([
            self.prompt,
            w.HBox([self.models, w.VBox([self.num_predict, self.temperature])]),
            w.HBox([self.run, self.stop, self.status]),
            self.columns,
            self.summary,
        ])

    def options(self) -> dict[str, Any]:
        return {**self.extra_options, "num_predict": int(self.num_predict.value),
                "temperature": float(self.temperature.value)}

    def start(self) -> bool:
        """Run the prompt on every selected model, in the background."""
        prompt = self.prompt.value.strip()
        models = list(self.models.value)
        if not prompt or not models or self._worker.busy:
            return False
        options = self.options()
        panes: list[tuple[str, Any, Any]] = []
        for model in models:
            reply, stats = w.Output(), w.HTML("<small>waiting…</small>")
            reply.outputs = markdown_outputs("")
            panes.append((model, reply, stats))
        self.columns.children = tuple(
            w.VBox([w.HTML(f"<b>{html.escape(m)}</b>"), r, s],
                   layout=w.Layout(flex="1 1 0", min_width="200px", margin="0 8px 0 0"))
            for m, r, s in panes
        )
        self.results = []
        self.summary.value = ""
        self.run.disabled, self.stop.disabled = True, False
        self.status.value = ""

        def job() -> None:
            for model, reply, stats in panes:
                if self._worker.cancel.is_set():
                    stats.value = "<small>skipped</small>"
                    continue
                stats.value = "<small>generating…</small>"
                started = time.perf_counter_ns()
                try:
                    chunks = self.backend.chat(model=model, messages=[{"role": "user", "content": prompt}],
                                               options=options, stream=True)
                    result = read_reply(
                        chunks, model=model, started_ns=started,
                        on_text=lambda text, out=reply: setattr(out, "outputs", markdown_outputs(text)),
                        interval=self.interval, cancel=self._worker.cancel,
                    )
                except Exception as exc:  # noqa: BLE001 - one failing model does not stop the others

                    stats.value = f"<small><b>Error:</b> {html.escape(error_line(exc))}</small>"
                    continue
                result.prompt = prompt
                reply.outputs = markdown_outputs(result.text, result.metadata())
                stats.value = f"<small>{html.escape(result.stats_line())}</small>"
                if not result.interrupted:
                    self.results.append(result.row())
                    self._show_summary()

        def failed(line: str) -> None:
            self.status.value = f"<b>Error:</b> {html.escape(line)}"

        def finished() -> None:
            self.run.disabled, self.stop.disabled = False, True

        return self._worker.start(job, on_error=failed, on_finish=finished)

    def _show_summary(self) -> None:
        frame = self.frame().drop(columns=["reply", "prompt"])
        self.summary.value = frame.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0)

    def frame(self) -> Any:
        """The finished rows as a DataFrame (the columns of ``ollama_nb.compare``)."""
        import pandas as pd

        return pd.DataFrame(self.results, columns=list(ROW_COLUMNS))

    def wait(self, timeout: float | None = None) -> bool:
        return self._worker.join(timeout)


__all__ = ["ComparisonView"]
