"""What every ``ollama-nb`` command shares: the in-process manager and progress display."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api.types import ProgressResponse, ShowResponse
    from ..manager.core import ModelManager

__all__ = ["manager", "show_info", "show_progress"]


def manager() -> ModelManager:
    from ..manager.default import default_manager

    return default_manager()


def show_progress(events: Iterable[ProgressResponse], out: Any = None) -> None:
    """Status lines, and a tqdm bar per digest while bytes move."""
    from tqdm import tqdm

    out = out or sys.stderr
    bars: dict[str, Any] = {}
    for ev in events:
        if ev.digest and ev.total:
            bar = bars.get(ev.digest)
            if bar is None:
                bar = bars[ev.digest] = tqdm(total=ev.total, desc=ev.status, unit="B", unit_scale=True,
                                             file=out, leave=True)
            bar.update((ev.completed or 0) - bar.n)
            if ev.completed == ev.total:
                bar.close()
        else:
            print(ev.status, file=out)
    for bar in bars.values():
        bar.close()


def show_info(info: ShowResponse, out: Any = None) -> None:
    """``ollama show``'s sections (Model, Capabilities, Parameters, System, License)."""
    out = out or sys.stdout
    arch = info.model_info.get("general.architecture", info.details.family)
    ctx = info.model_info.get(f"{arch}.context_length", "")
    embd = info.model_info.get(f"{arch}.embedding_length", "")
    sections = [
        ("Model", [("architecture", arch), ("parameters", info.details.parameter_size),
                   ("context length", ctx), ("embedding length", embd),
                   ("quantization", info.details.quantization_level)]),
        ("Capabilities", [(c, "") for c in info.capabilities or []]),
    ]
    if info.parameters:
        sections.append(("Parameters", [tuple(line.split(None, 1)) + ("",) * (2 - len(line.split(None, 1)))
                                        for line in info.parameters.splitlines()]))
    if info.system:
        sections.append(("System", [(info.system.splitlines()[0], "")]))
    if info.license:
        sections.append(("License", [(info.license.splitlines()[0], "")]))
    for title, rows in sections:
        print(f"  {title}", file=out)
        for key, value in rows:
            print(f"    {key:<20}{value}".rstrip(), file=out)
        print(file=out)
