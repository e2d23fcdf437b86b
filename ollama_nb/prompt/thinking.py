"""A thinking model's reply split into its thinking and its answer, as Ollama's thinking parser
does it (``thinking/parser.go``): the tags come from the model's template (``<think>`` and
``</think>`` for most models), text before the opening tag that is only whitespace is dropped, and
everything up to the closing tag is thinking. When the template itself opens the tag at the end
of the prompt (DeepSeek-R1, Qwen3 with thinking on), the reply starts inside the thinking.

Text is fed as it streams; a piece that may be the start of a tag is held until the next piece
says whether it was one, so a tag split across tokens is never shown.
"""

from __future__ import annotations

import re

__all__ = ["ThinkingParser", "infer_tags"]

_TAG_PAIRS = (("<think>", "</think>"), ("<thinking>", "</thinking>"), ("<|think|>", "<|/think|>"))


def infer_tags(template: str) -> tuple[str, str] | None:
    """The opening and closing tags a template's thinking uses, or None when it has none."""
    for opening, closing in _TAG_PAIRS:
        if opening in template and closing in template:
            return opening, closing
    if "<think>" in template or re.search(r"\.Think\b|enable_thinking", template):
        return "<think>", "</think>"
    return None


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ThinkingParser:
    """``feed`` returns ``(thinking, content)`` for each piece; ``flush`` what is held at the end."""

    def __init__(self, opening: str = "<think>", closing: str = "</think>", *, started: bool = False) -> None:
        self.opening, self.closing = opening, closing
        self.state = "thinking" if started else "looking"  # looking -> thinking -> after -> answering
        self._held = ""

    def prompt_rendered(self, prompt: str) -> None:
        """A prompt that ends by opening the tag: the reply begins inside the thinking."""
        if self.state == "looking" and prompt.rstrip().endswith(self.opening):
            self.state = "thinking"

    def feed(self, text: str) -> tuple[str, str]:
        thinking, content = [], []
        buffer = self._held + text
        self._held = ""
        while buffer:
            if self.state == "looking":
                stripped = buffer.lstrip()
                if stripped.startswith(self.opening):
                    buffer = stripped[len(self.opening):]
                    self.state = "thinking"
                    continue
                if not stripped or self.opening.startswith(stripped):
                    self._held = buffer  # whitespace, or the tag arriving in pieces
                    break
                self.state = "answering"  # the model answered without thinking
                continue
            if self.state == "thinking":
                end = buffer.find(self.closing)
                if end >= 0:
                    thinking.append(buffer[:end].rstrip())  # the line break before the tag is no thought
                    buffer = buffer[end + len(self.closing):]
                    self.state = "after"
                    continue
                keep = _partial_suffix(buffer, self.closing)
                shown = buffer[: len(buffer) - keep].rstrip()  # trailing whitespace waits: it may end the thought
                thinking.append(shown)
                self._held = buffer[len(shown):]
                break
            if self.state == "after":  # the whitespace between the thinking and the answer goes
                buffer = buffer.lstrip()
                if not buffer:
                    break
                self.state = "answering"
            content.append(buffer)
            break
        return "".join(thinking), "".join(content)

    def flush(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        if self.state == "thinking":
            return held, ""
        return "", held.lstrip() if self.state in ("looking", "after") else held
