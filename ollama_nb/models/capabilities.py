"""Which of Ollama's capabilities a model has, decided in one place for ``/api/show`` and
``/api/tags`` so the two never disagree.

The rule is Ollama's: ``embedding`` for a GGUF with a pooling type, else ``completion``;
``tools`` when the template uses ``.Tools`` (or, with no Go template, the GGUF's Jinja template
mentions tools); ``insert`` when it uses ``.Suffix`` or the vocabulary has fill-in-the-middle
tokens; ``vision`` with a projector; ``thinking`` when the template knows thinking tags; plus any
the config blob declares. Every input is a header fact or a small layer, so listing a store of
large models stays a matter of milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .gguf_meta import GGUFSummary

__all__ = ["model_capabilities"]

_TOOLS = re.compile(r"\.Tools\b")


def model_capabilities(summary: GGUFSummary | None, template: str | None, *, has_projector: bool,
                       declared: Iterable[str] = ()) -> list[str]:
    """The capabilities, in Ollama's order. ``template`` is the model's Go template layer
    (None when it has none, and the GGUF's own Jinja template applies)."""
    caps = ["embedding" if summary is not None and summary.has_pooling_type else "completion"]
    text = template if template is not None else (summary.chat_template if summary else None) or ""
    if _TOOLS.search(text) or (template is None and "tools" in text):
        caps.append("tools")
    if ".Suffix" in text or (template is None and summary is not None and summary.has_fim_tokens):
        caps.append("insert")
    if has_projector or (summary is not None and summary.has_vision_tower):
        caps.append("vision")
    if "<think>" in text or "enable_thinking" in text or ".Think" in text:
        caps.append("thinking")
    caps.extend(c for c in declared if c not in caps)
    return caps
