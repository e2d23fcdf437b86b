"""What a reply looks like in a notebook or a terminal.

:class:`ChatResult` is the one object a ``%%chat``/``%%generate`` cell, a widget reply and a
``compare()`` row are made from: the text plus the timings Ollama reports, with a
``_repr_mimebundle_`` that offers Markdown to JupyterLab and plain text to a terminal, and
metadata (``{"ollama_nb": {...}}``) so a saved notebook records which model said what, and how
fast. The two stream sinks put a reply on screen while it is generated: a display handle that is
updated in place (notebook), or the plain text written as it comes (terminal IPython, where each
display update would print the whole reply again).

No IPython import here: the sinks talk to the shell they are given, so this module stays cheap.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TextIO

from ..base.errors import ModelNotFound, OllamaNbError
from ..base.humanize import human_bytes, human_since
from ..base.timings import COLUMNS as TIMING_COLUMNS
from ..base.timings import Timings

Format = Literal["markdown", "text", "json", "code"]
FORMATS: tuple[str, ...] = ("markdown", "text", "json", "code")


#: The columns of a comparison table (``ollama_nb.compare``, the comparison widget): what was
#: asked of which model and its answer, then the one timing column list.
ROW_COLUMNS = ("model", "prompt", "reply", *TIMING_COLUMNS, "error")

# The metadata keys of a reply cut short: the same keys as a finished one, all None, so a saved
# notebook's outputs have one schema.
_NO_TIMINGS: dict[str, Any] = dict.fromkeys(Timings().to_dict())


@dataclass
class ChatResult:
    """One reply and what it cost. ``timings`` is the request's own
    :class:`~ollama_nb.base.timings.Timings` (the object the API reply and the metrics record hold
    too); it is None when the reply was cut short (kernel interrupt, Stop button), and then
    ``interrupted`` is set and ``text`` is what had arrived by then."""

    text: str
    model: str
    kind: str = "chat"  # "chat" or "generate"
    prompt: str = ""
    session: str | None = None
    format: str = "markdown"
    done_reason: str | None = None
    interrupted: bool = False
    value: Any = None  # the parsed object (json) or the extracted code (code)
    timings: Timings | None = None
    context: list[int] | None = field(default=None, repr=False)
    error: str | None = None  # why the reply broke off (a remote backend failed mid-stream)

    def metadata(self) -> dict[str, Any]:
        """Output metadata: which model, which session, and the timings of this reply."""
        return {
            "ollama_nb": {
                "model": self.model,
                "kind": self.kind,
                "session": self.session,
                "format": self.format,
                "done_reason": self.done_reason,
                "interrupted": self.interrupted,
                "error": self.error,
                **(self.timings.to_dict() if self.timings else _NO_TIMINGS),
            }
        }

    def row(self) -> dict[str, Any]:
        """One comparison-table row (see ``ROW_COLUMNS``)."""
        timing = self.timings.row() if self.timings else dict.fromkeys(TIMING_COLUMNS)
        return {"model": self.model, "prompt": self.prompt, "reply": self.text, **timing, "error": self.error}

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "context"}
        data["timings"] = self.timings.to_dict() if self.timings else None
        return data

    def stats_line(self) -> str:
        """``smollm2:135m · 12 tokens · 85.3 tokens/s`` (what the widgets show under a reply)."""
        parts = [self.model]
        t = self.timings
        if t is not None:
            parts.append(f"{t.eval_count} tokens")
            if t.tokens_per_second is not None:
                parts.append(f"{t.tokens_per_second:.1f} tokens/s")
            if t.ttft_s is not None:
                parts.append(f"first token {t.ttft_s:.2f} s")
        if self.error:
            parts.append(f"broken off: {self.error}")
        elif self.interrupted:
            parts.append("interrupted")
        return " · ".join(parts)

    # ---- rendering -----------------------------------------------------------------------

    def __str__(self) -> str:
        return self.text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        return render(self), self.metadata()


def render(result: ChatResult) -> dict[str, Any]:
    """The MIME bundle of a finished reply, by its format."""
    mark = f"broken off: {result.error}" if result.error else "interrupted"
    note = f"\n\n*[{mark}]*" if result.interrupted else ""
    plain = result.text + (f"\n[{mark}]" if result.interrupted else "")
    if result.format == "text":
        return {"text/plain": plain}
    if result.format == "json" and result.value is not None:
        pretty = json.dumps(result.value, indent=2, ensure_ascii=False)
        return {"text/plain": pretty, "text/markdown": f"```json\n{pretty}\n```{note}"}
    return {"text/plain": plain, "text/markdown": result.text + note}


def summary_bundle(result: ChatResult, what: str) -> dict[str, Any]:
    """A one-line stand-in for a reply whose content is the cell's value (``--format json``)."""
    line = f"{what} · {result.stats_line()}"
    return {"text/plain": line, "text/markdown": f"<small>{line}</small>"}


_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The first fenced code block of a reply, or the whole reply when it has none."""
    match = _FENCE.search(text)
    return (match.group(1) if match else text).strip("\n")


def error_line(exc: BaseException) -> str:
    """One line for a person in a notebook: Ollama's message plus the next step, spelled as a
    magic (``%ollama pull x``) rather than as the command line's ``ollama-nb pull x``."""

    if isinstance(exc, ModelNotFound) and exc.name:
        return f"{exc.message} (try `%ollama pull {exc.name}`)"
    if isinstance(exc, OllamaNbError):
        return exc.for_humans().replace("`ollama-nb ", "`%ollama ")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---- model tables -----------------------------------------------------------------------------


def _since(text: str) -> str:


    try:
        return human_since(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return text


def _size(n: int) -> str:

    return human_bytes(n)


def models_table(listing: Any) -> Any:
    """Installed models (a ListResponse) as a DataFrame: ``ollama list`` plus the details."""
    import pandas as pd

    rows = [
        {
            "name": x.name,
            "id": x.digest.removeprefix("sha256:")[:12],
            "size": _size(x.size),
            "family": x.details.family,
            "parameters": x.details.parameter_size,
            "quantization": x.details.quantization_level,
            "modified": _since(x.modified_at),
        }
        for x in listing.models
    ]
    return pd.DataFrame(rows, columns=["name", "id", "size", "family", "parameters", "quantization", "modified"])


def backends_table(health: Any) -> Any:
    """``%ollama backends``: each backend (the kernel's own first), whether it answers, how many
    models it has and how long listing them took."""
    import pandas as pd

    columns = ["name", "kind", "url", "status", "models", "latency_ms", "api_key_env"]
    rows = [{"name": h.name, "kind": h.kind, "url": h.url, "status": h.status,
             "models": h.models, "latency_ms": h.latency_ms, "api_key_env": h.api_key_env or ""} for h in health]
    return pd.DataFrame(rows, columns=columns).astype({"models": "Int64"})


def _processor(size: int, vram: int) -> str:
    if vram == 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    gpu = round(100 * vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def loaded_table(processes: Any) -> Any:
    """Loaded models (a ProcessResponse) as a DataFrame: ``ollama ps``."""

    import pandas as pd

    rows = []
    for x in processes.models:
        try:
            forever = dt.datetime.fromisoformat(x.expires_at.replace("Z", "+00:00")).year > 2200
        except ValueError:
            forever = False
        rows.append({
            "name": x.name,
            "id": x.digest.removeprefix("sha256:")[:12],
            "size": _size(x.size),
            "processor": _processor(x.size, x.size_vram),
            "context": x.context_length,
            "until": "Forever" if forever else _since(x.expires_at),
        })
    return pd.DataFrame(rows, columns=["name", "id", "size", "processor", "context", "until"])


# ---- stream sinks ----------------------------------------------------------------------------


class DisplayStream:
    """A reply streamed into one output area of the cell: ``display_data`` once, then
    ``update_display_data`` for the same display id. Published through the given shell's
    display publisher (what ``IPython.display.display`` does), so it works for any shell, and
    nbclient collapses the updates into the final output of a saved notebook."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.display_id = uuid.uuid4().hex
        self.updates = 0

    def _publish(self, data: dict[str, Any], metadata: dict[str, Any] | None, update: bool) -> None:
        self.shell.display_pub.publish(
            data=data,
            metadata=metadata or {},
            transient={"display_id": self.display_id},
            update=update,
        )

    def start(self, placeholder: str = "…") -> None:
        self._publish({"text/plain": placeholder}, None, update=False)

    def update(self, text: str) -> None:
        self.updates += 1
        self._publish({"text/plain": text}, None, update=True)

    def finish(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self._publish(data, metadata, update=True)

    def abandon(self) -> None:
        """The request failed: blank the placeholder rather than leave it spinning."""
        self._publish({"text/plain": ""}, None, update=True)


class TextStream:
    """A reply written as plain text while it arrives (terminal IPython): only the new part of
    each update is written, so the terminal shows one growing reply."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out
        self.written = ""
        self.updates = 0

    @property
    def _out(self) -> TextIO:
        return self.out or sys.stdout

    def start(self, placeholder: str = "") -> None:
        pass

    def update(self, text: str) -> None:
        self.updates += 1
        new = text[len(self.written):] if text.startswith(self.written) else "\n" + text
        self.written = text
        self._out.write(new)
        self._out.flush()

    def finish(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        if not self.written and data.get("text/plain"):
            self._out.write(str(data["text/plain"]))
        self._out.write("\n")
        self._out.flush()

    def abandon(self) -> None:
        if self.written:
            self._out.write("\n")
            self._out.flush()


__all__ = [
    "FORMATS",
    "ROW_COLUMNS",
    "ChatResult",
    "DisplayStream",
    "TextStream",
    "backends_table",
    "error_line",
    "extract_code",
    "loaded_table",
    "models_table",
    "render",
    "summary_bundle",
]
