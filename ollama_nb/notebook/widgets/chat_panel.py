"""A chat panel: pick an installed model, set a system prompt and a temperature, type, Send.

The reply streams into the transcript as Markdown (at most one update per ``interval``), Stop
ends it before the next token, and each reply gets a line with its tokens and tokens/s. The
conversation is an :class:`ollama_nb.notebook.sessions.Session`, so it continues across messages the
same way ``%%chat`` does (and reuses the model's KV cache); Clear starts it afresh.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from ..connection import read_reply
from ..display import ChatResult, error_line
from ..images import images_base64, thumbnails_html
from ..sessions import Session
from ..throttle import DEFAULT_INTERVAL
from ._common import Worker, grouped_models, markdown_outputs, resolve_backend


class ChatPanel(w.VBox):
    """``ChatPanel()`` in a cell shows the panel; ``manager=`` picks another model backend."""

    def __init__(
        self,
        manager: Any = None,
        *,
        model: str | None = None,
        system: str = "",
        temperature: float = 0.7,
        options: Mapping[str, Any] | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.backend = resolve_backend(manager)
        self.options = dict(options or {})
        self.interval = interval
        self.session = Session("chat-panel")
        self.last_result: ChatResult | None = None
        self._worker = Worker("chat-panel")

        self.model = w.Dropdown(description="Model", layout=w.Layout(width="280px"))
        self.refresh = w.Button(icon="refresh", tooltip="Reload the list of installed models",
                                layout=w.Layout(width="40px"))
        self.temperature = w.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                         description="Temperature", readout_format=".2f")
        self.system = w.Textarea(value=system, placeholder="System prompt (optional)",
                                 layout=w.Layout(width="100%", height="48px"))
        self.transcript = w.VBox(layout=w.Layout(width="100%", max_height="480px", overflow="auto"))
        self.prompt = w.Textarea(placeholder="Message", layout=w.Layout(width="100%", height="64px"))
        self.images = w.FileUpload(accept="image/*", multiple=True, description="Image",
                                   tooltip="Attach images to the next message (for a model with vision)")
        self.send = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop = w.Button(description="Stop", icon="stop", disabled=True)
        self.clear = w.Button(description="Clear", icon="trash")
        self.status = w.HTML()
        # Stable CSS classes, so pages (and browser tests) can find the parts of the panel.
        for part, name in ((self.model, "model"), (self.transcript, "transcript"), (self.prompt, "input"),
                           (self.send, "send"), (self.stop, "stop"), (self.clear, "clear"),
                           (self.status, "status"), (self.images, "images")):
            part.add_class(f"ollama-nb-chat-{name}")

        self.send.on_click(lambda _: self.submit())
        self.stop.on_click(lambda _: self._worker.stop())
        self.clear.on_click(lambda _: self.reset())
        self.refresh.on_click(lambda _: self.refresh_models())
        super().__init__([
            w.HBox([self.model, self.refresh, self.temperature]),
            self.system,
            self.transcript,
            self.prompt,
            w.HBox([self.send, self.stop, self.clear, self.images]),
            self.status,
        ])
        self.add_class("ollama-nb-chat-panel")
        self.refresh_models(select=model)

    # ---- actions ----------------------------------------------------------------------------

    def refresh_models(self, select: str | None = None) -> None:
        try:
            pairs, problems = grouped_models(self.backend)
        except Exception as exc:  # noqa: BLE001 (shown in the widget)
            self.status.value = f"<b>Error:</b> {html.escape(error_line(exc))}"
            return
        if problems:  # the other backends' models are still offered
            self.status.value = "<br>".join(f"<b>Error:</b> {html.escape(p)}" for p in problems)
        names = [value for _, value in pairs]
        keep = select or self.model.value
        if keep and keep not in names:
            names = [keep, *names]  # a name given explicitly is kept; sending tells if it exists
            pairs = [(keep, keep), *pairs]
        self.model.options = names if all(label == value for label, value in pairs) else pairs
        if keep:
            self.model.value = keep
        elif names:
            self.model.value = names[0]

    def attached(self) -> list[str]:
        """The uploaded images waiting for the next message, as base64."""
        return images_base64([bytes(item["content"]) for item in self.images.value])

    def submit(self, text: str | None = None, images: Any = None) -> bool:
        """Send ``text`` (default: the input box) with ``images`` (default: the uploaded ones).
        False when busy, empty or no model chosen."""
        text = (self.prompt.value if text is None else text).strip()
        model = self.model.value
        if not text or not model or self._worker.busy:
            return False
        pictures = images_base64(images) if images is not None else self.attached()
        self.prompt.value = ""
        self.images.value = ()
        user = w.Output()
        user.outputs = markdown_outputs(f"**You:** {text}")
        if pictures:
            user.outputs = (*user.outputs, {"output_type": "display_data", "metadata": {},
                                            "data": {"text/html": thumbnails_html(pictures),
                                                     "text/plain": f"[{len(pictures)} image(s)]"}})
        reply = w.Output()
        reply.outputs = markdown_outputs(f"**{model}:** …")
        stats = w.HTML()
        user.add_class("ollama-nb-chat-user")
        reply.add_class("ollama-nb-chat-reply")
        stats.add_class("ollama-nb-chat-stats")
        self.transcript.children = (*self.transcript.children, user, reply, stats)
        self.session.system = self.system.value.strip() or None
        options = {**self.options, "temperature": float(self.temperature.value)}
        self.send.disabled, self.stop.disabled = True, False
        self.status.value = "generating…"

        def job() -> None:
            started = time.perf_counter_ns()
            chunks = self.backend.chat(model=model, messages=self.session.messages(text, images=pictures),
                                       options=options, stream=True)
            result = read_reply(
                chunks,
                model=model,
                started_ns=started,
                on_text=lambda so_far: setattr(reply, "outputs", markdown_outputs(f"**{model}:** {so_far}")),
                interval=self.interval,
                cancel=self._worker.cancel,
            )
            result.prompt = text
            result.session = self.session.name
            self.session.record(text, result.text, model, interrupted=result.interrupted,
                                eval_count=result.timings.eval_count if result.timings else None,
                                images=pictures)
            mark = " *[stopped]*" if result.interrupted else ""
            reply.outputs = markdown_outputs(f"**{model}:** {result.text}{mark}", result.metadata())
            stats.value = f"<small>{html.escape(result.stats_line())}</small>"
            self.last_result = result
            self.status.value = ""

        def failed(line: str) -> None:
            reply.outputs = markdown_outputs(f"**{model}:** *error: {line}*")
            self.status.value = f"<b>Error:</b> {html.escape(line)}"

        def finished() -> None:
            self.send.disabled, self.stop.disabled = False, True

        return self._worker.start(job, on_error=failed, on_finish=finished)

    def reset(self) -> None:
        """Forget the conversation and empty the transcript (not while a reply streams)."""
        if self._worker.busy:
            return
        self.session.clear()
        self.transcript.children = ()
        self.last_result = None
        self.status.value = ""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current reply is complete (for scripts and tests)."""
        return self._worker.join(timeout)

    @property
    def busy(self) -> bool:
        return self._worker.busy


__all__ = ["ChatPanel"]
