"""A model manager: installed models (size, family, quantization, modified) with Delete, a Pull
box with a progress bar, and the loaded models with their expiry and Unload.

A pull runs in a worker thread (it may take minutes) and moves the bar at most once per
``interval``; delete asks for a second click before it removes anything.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from ..display import backends_table, error_line, loaded_table, models_table
from ..throttle import DEFAULT_INTERVAL, Throttle
from ._common import Worker, resolve_backend


def _table(frame: Any, empty: str) -> str:
    if frame.empty:
        return f"<i>{html.escape(empty)}</i>"
    return frame.to_html(index=False, escape=True, border=0)


class ModelManagerPanel(w.VBox):
    """``ModelManagerPanel()`` in a cell shows the panel; ``manager=`` picks another backend."""

    def __init__(self, manager: Any = None, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.backend = resolve_backend(manager)
        self.interval = interval
        self._worker = Worker("model-manager")
        self._confirm: str | None = None  # the model a first Delete click armed

        self.backends_html = w.HTML()
        self.installed_html = w.HTML()
        self.installed = w.Dropdown(description="Model", layout=w.Layout(width="320px"))
        self.delete = w.Button(description="Delete", icon="trash", button_style="warning")
        self.pull_name = w.Text(placeholder="model to pull, e.g. smollm2:135m", layout=w.Layout(width="320px"))
        self.pull = w.Button(description="Pull", icon="download", button_style="primary")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=100.0, description="", bar_style="info")
        self.pull_status = w.Label()
        self.loaded_html = w.HTML()
        self.loaded = w.Dropdown(description="Loaded", layout=w.Layout(width="320px"))
        self.unload = w.Button(description="Unload", icon="eject")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.status = w.HTML()

        self.delete.on_click(lambda _: self.delete_selected())
        self.pull.on_click(lambda _: self.start_pull())
        self.unload.on_click(lambda _: self.unload_selected())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.installed.observe(lambda _: self._disarm(), names="value")
        super().__init__([
            self.backends_html,
            w.HTML("<b>Installed models</b>"),
            self.installed_html,
            w.HBox([self.installed, self.delete]),
            w.HBox([self.pull_name, self.pull, self.progress, self.pull_status]),
            w.HTML("<b>Loaded models</b>"),
            self.loaded_html,
            w.HBox([self.loaded, self.unload]),
            w.HBox([self.refresh_button, self.status]),
        ])
        self.refresh()

    # ---- state ------------------------------------------------------------------------------

    def _say(self, text: str, error: bool = False) -> None:
        self.status.value = f"<b>Error:</b> {html.escape(text)}" if error else html.escape(text)

    def refresh(self) -> None:
        """Re-read installed and loaded models."""
        try:
            listing, running = self.backend.list(), self.backend.ps()
        except Exception as exc:  # noqa: BLE001 (shown in the widget)
            self._say(error_line(exc), error=True)
            return
        self.backends_html.value = self._backends()
        self.installed_html.value = _table(models_table(listing), "no models installed yet: pull one")
        self.loaded_html.value = _table(loaded_table(running), "no model is loaded")
        names = sorted(m.name for m in listing.models)
        keep = self.installed.value
        self.installed.options = names
        self.installed.value = keep if keep in names else (names[0] if names else None)
        loaded = sorted(m.name for m in running.models)
        keep = self.loaded.value
        self.loaded.options = loaded
        self.loaded.value = keep if keep in loaded else (loaded[0] if loaded else None)
        self._disarm()

    def _backends(self) -> str:
        """The backends table, when there are named backends beside the kernel's models."""
        if not getattr(self.backend, "names", list)():
            return ""
        table = backends_table(self.backend.health())
        return "<b>Backends</b>" + _table(table, "")

    def installed_names(self) -> list[str]:
        return list(self.installed.options)

    def loaded_names(self) -> list[str]:
        return list(self.loaded.options)

    # ---- actions ----------------------------------------------------------------------------

    def _disarm(self) -> None:
        self._confirm = None
        self.delete.description = "Delete"
        self.delete.button_style = "warning"

    def delete_selected(self) -> bool:
        """First click arms, second click (same model) deletes. True once deleted."""
        name = self.installed.value
        if not name:
            return False
        if self._confirm != name:
            self._confirm = name
            self.delete.description = f"Delete {name}?"
            self.delete.button_style = "danger"
            self._say(f"click again to delete {name}")
            return False
        try:
            self.backend.delete(name)
        except Exception as exc:  # noqa: BLE001 (shown in the widget)
            self._say(error_line(exc), error=True)
            self._disarm()
            return False
        self.refresh()
        self._say(f"deleted {name}")
        return True

    def unload_selected(self) -> bool:
        name = self.loaded.value
        if not name:
            return False
        try:
            was_loaded = self.backend.unload(name)
        except Exception as exc:  # noqa: BLE001 (shown in the widget)
            self._say(error_line(exc), error=True)
            return False
        self.refresh()
        self._say(f"unloaded {name}" if was_loaded else f"{name} was not loaded")
        return was_loaded

    def start_pull(self, name: str | None = None) -> bool:
        """Pull in the background; the bar shows the bytes of all layers together."""
        name = (name or self.pull_name.value).strip()
        if not name or self._worker.busy:
            return False
        self.pull.disabled = True
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.pull_status.value = f"pulling {name}…"
        totals: dict[str, int] = {}
        done: dict[str, int] = {}
        state = {"status": ""}

        def show() -> None:
            total = sum(totals.values())
            if total:
                self.progress.value = min(100.0, 100.0 * sum(done.values()) / total)
            self.pull_status.value = state["status"]

        def job() -> None:
            throttle = Throttle(show, self.interval)
            events = self.backend.pull(name)
            try:
                for ev in events:
                    if self._worker.cancel.is_set():
                        break
                    state["status"] = ev.status
                    if ev.digest and ev.total:
                        totals[ev.digest] = ev.total
                        done[ev.digest] = ev.completed or 0
                    throttle.poke()
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()
            throttle.close()
            if state["status"] == "success":
                self.progress.value = 100.0
                self.progress.bar_style = "success"
                self.pull_status.value = f"pulled {name}"
                self.refresh()

        def failed(line: str) -> None:
            self.progress.bar_style = "danger"
            self.pull_status.value = "failed"
            self._say(line, error=True)

        def finished() -> None:
            self.pull.disabled = False

        return self._worker.start(job, on_error=failed, on_finish=finished)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a running pull ends (for scripts and tests)."""
        return self._worker.join(timeout)


__all__ = ["ModelManagerPanel"]
