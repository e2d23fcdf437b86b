"""Performance plots of recorded requests, for notebooks and for the server's PNG endpoints.

Input is the DataFrame of :meth:`ollama_nb.observe.metrics.MetricsRecorder.to_dataframe` (or the
recorder itself). Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot:
no global backend is switched (a notebook keeps its inline backend), no figure is kept alive in
pyplot's registry, and rendering to PNG goes through Agg. matplotlib is imported on first use
only, so ``import ollama_nb`` stays fast.

The four views, by name (also the server's ``/dashboard/plot/<name>.png``):

``tokens_per_second``     generation speed of each request, per model, over time
``ttft``                  time to first token of each request, per model, over time
``prompt_vs_generation``  prompt evaluation vs generation time of the latest requests (stacked)
``load_time``             time spent waiting for the model to load, per request
``overview``              all four on one figure
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..base.timings import LABELS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PLOT_NAMES", "figure", "overview", "render_png"]

#: How many of the latest requests the per-request bar charts show.
LAST_REQUESTS = 40

# Agg keeps global state (font cache, text layout); one render at a time is cheap insurance.
_RENDER_LOCK = threading.Lock()


def _frame(data: Any) -> pd.DataFrame:
    return data.to_dataframe() if hasattr(data, "to_dataframe") else data


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax.set_xticks([])
    ax.set_yticks([])


def _per_model_over_time(ax: Axes, df: pd.DataFrame, column: str, scale: float, ylabel: str,
                         title: str) -> None:
    ax.set_title(title)
    data = df.dropna(subset=[column])
    if data.empty:
        _empty(ax, "data")
        return
    for model, rows in data.groupby("model", sort=True):
        ax.plot(rows["time"], rows[column] * scale, marker="o", markersize=3, linewidth=1, label=str(model))
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", loc="best")
    ax.grid(True, alpha=0.3)
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def plot_tokens_per_second(ax: Axes, df: pd.DataFrame) -> None:
    _per_model_over_time(ax, df, "tokens_per_second", 1.0, LABELS["tokens_per_second"], "Generation speed")


def plot_ttft(ax: Axes, df: pd.DataFrame) -> None:
    _per_model_over_time(ax, df, "ttft_s", 1000.0, "ms", "Time to first token")


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("seq").tail(LAST_REQUESTS)


def _request_labels(ax: Axes, rows: pd.DataFrame) -> None:
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"#{s}" for s in rows["seq"]], rotation=90, fontsize="x-small")
    ax.set_xlabel("request")


def plot_prompt_vs_generation(ax: Axes, df: pd.DataFrame) -> None:
    ax.set_title("Prompt evaluation vs generation")
    rows = _latest(df[df["endpoint"] != "embed"]) if not df.empty else df
    if rows.empty:
        _empty(ax, "requests")
        return
    x = range(len(rows))
    prompt = rows["prompt_eval_s"] * 1000
    ax.bar(x, prompt, label="prompt eval", color="#4C72B0")
    ax.bar(x, rows["eval_s"] * 1000, bottom=prompt, label="generation", color="#DD8452")
    ax.set_ylabel("ms")
    _request_labels(ax, rows)
    ax.legend(fontsize="small", loc="best")
    ax.grid(True, axis="y", alpha=0.3)


def plot_load_time(ax: Axes, df: pd.DataFrame) -> None:
    ax.set_title("Model load wait")
    rows = _latest(df) if not df.empty else df
    if rows.empty:
        _empty(ax, "requests")
        return
    models = sorted(rows["model"].unique())
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    from matplotlib.patches import Patch

    ax.bar(range(len(rows)), rows["load_s"] * 1000, color=[colours[m] for m in rows["model"]])
    ax.set_ylabel("ms")
    _request_labels(ax, rows)
    ax.legend(handles=[Patch(color=colours[m], label=m) for m in models], fontsize="small", loc="best")
    ax.grid(True, axis="y", alpha=0.3)


_PLOTS: dict[str, Callable[[Axes, pd.DataFrame], None]] = {
    "tokens_per_second": plot_tokens_per_second,
    "ttft": plot_ttft,
    "prompt_vs_generation": plot_prompt_vs_generation,
    "load_time": plot_load_time,
}
#: Every name :func:`figure` and :func:`render_png` accept.
PLOT_NAMES = (*_PLOTS, "overview")


_figure_class: Any = None


def _new_figure(size: tuple[float, float]) -> Figure:
    """A Figure that shows itself as a PNG in any IPython front end.

    We build figures without pyplot (so a notebook's backend and its open figures are left
    alone), but then nothing registers them for inline display: a fresh kernel would print
    ``<Figure ...>``. ``_repr_png_`` makes the figure its own rich output.
    """
    global _figure_class
    if _figure_class is None:
        from matplotlib.figure import Figure

        class NotebookFigure(Figure):
            def _repr_png_(self) -> bytes:
                buf = io.BytesIO()
                with _RENDER_LOCK:
                    self.savefig(buf, format="png", dpi=100)
                return buf.getvalue()

        _figure_class = NotebookFigure
    return _figure_class(figsize=size, layout="constrained")


def figure(name: str, data: Any) -> Figure:
    """One named plot (see the module docstring) of a DataFrame or a MetricsRecorder."""
    if name == "overview":
        return overview(data)
    try:
        draw = _PLOTS[name]
    except KeyError:
        raise ValueError(f"unknown plot {name!r}; choose one of {', '.join(PLOT_NAMES)}") from None
    fig = _new_figure((7.0, 3.6))
    draw(fig.add_subplot(), _frame(data))
    return fig


def overview(data: Any) -> Figure:
    """All four plots on a 2x2 grid."""
    df = _frame(data)
    fig = _new_figure((12.0, 7.5))
    for ax, draw in zip(fig.subplots(2, 2).flat, _PLOTS.values()):
        draw(ax, df)
    return fig


def render_png(name: str, data: Any, *, dpi: int = 100) -> bytes:
    """PNG bytes of :func:`figure` (blocking: call it from a worker thread in a server)."""
    with _RENDER_LOCK:
        fig = figure(name, data)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ---- model comparison (the DataFrame of ``ollama_nb.compare``) ----------------------------------

__all__ += ["COMPARE_METRICS", "compare_figure", "compare_timings"]

#: Columns of a comparison DataFrame that :func:`compare_figure` can plot: every timing column,
#: labelled as everywhere else.
COMPARE_METRICS = LABELS


def _short(text: Any, width: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def compare_figure(df: pd.DataFrame, metric: str = "tokens_per_second") -> Figure:
    """Grouped bars of one metric: a group per prompt, a bar per model."""
    if metric not in COMPARE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(COMPARE_METRICS)}")
    fig = _new_figure((7.0, 3.6))
    ax = fig.add_subplot()
    ax.set_title(f"{COMPARE_METRICS[metric]} by model")
    data = df.dropna(subset=[metric]) if not df.empty else df
    if data.empty:
        _empty(ax, "results")
        return fig
    prompts = list(dict.fromkeys(data["prompt"]))
    models = list(dict.fromkeys(data["model"]))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        rows = data[data["model"] == model].set_index("prompt")[metric]
        xs = [p + (i - (len(models) - 1) / 2) * width for p in range(len(prompts))]
        ax.bar(xs, [float(rows.get(p, float("nan"))) for p in prompts], width, label=str(model),
               color=f"C{i % 10}")
    ax.set_xticks(range(len(prompts)), [_short(p) for p in prompts], fontsize="small")
    ax.set_ylabel(COMPARE_METRICS[metric])
    ax.legend(fontsize="small", loc="best")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def compare_timings(df: pd.DataFrame) -> Figure:
    """Where each reply's time went, stacked per model and prompt: loading the model, reading the
    prompt (up to the first token) and generating the rest."""
    fig = _new_figure((7.0, 0.9 + 0.45 * max(1, len(df))))
    ax = fig.add_subplot()
    ax.set_title("Time per reply")
    data = df.dropna(subset=["total_s", "ttft_s"]) if not df.empty else df
    if data.empty:
        _empty(ax, "results")
        return fig
    load = data["load_s"].fillna(0.0).astype(float)
    first = data["ttft_s"].astype(float)
    prompt = (first - load).clip(lower=0.0)
    generation = (data["total_s"].astype(float) - first).clip(lower=0.0)
    ys = range(len(data))
    ax.barh(ys, load, color="C7", label="load")
    ax.barh(ys, prompt, left=load, color="C1", label="prompt (to first token)")
    ax.barh(ys, generation, left=load + prompt, color="C0", label="generation")
    labels = [f"{m} · {_short(p, 20)}" for m, p in zip(data["model"], data["prompt"])]
    ax.set_yticks(list(ys), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.legend(fontsize="small", loc="best")
    ax.grid(True, axis="x", alpha=0.3)
    return fig
