"""Conversations that continue across cells.

A :class:`Session` is the transcript of one conversation: a system prompt and the finished
turns. Each new prompt is sent with the system prompt and the last ``max_history`` turns, in the
same order and with the same text every time, so the runtime finds the earlier turns already in
its KV cache and only evaluates the new ones. A turn is recorded only once its reply ended; an
interrupted reply is recorded with the text that had arrived, marked ``interrupted``, so the
transcript shows what the model really said. A failed request records nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SESSION = "default"


@dataclass
class Turn:
    prompt: str
    reply: str
    model: str
    interrupted: bool = False
    eval_count: int | None = None
    images: list[str] | None = None  # base64, sent again with the turn so its KV stays reusable


@dataclass
class Session:
    name: str
    system: str | None = None
    model: str | None = None  # the model of the last turn, used when a cell names none
    turns: list[Turn] = field(default_factory=list)

    def messages(self, prompt: str, max_history: int | None = None,
                 images: list[str] | None = None) -> list[dict[str, Any]]:
        """The chat messages for a new prompt: system, the recent turns, the prompt.

        ``max_history`` counts turns (user + assistant pairs); None (or negative) sends them all,
        0 none.
        """
        out: list[dict[str, Any]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        keep = len(self.turns) if max_history is None or max_history < 0 else max_history
        turns = self.turns[len(self.turns) - keep:] if keep else []
        for turn in turns:
            out.append({"role": "user", "content": turn.prompt, **({"images": turn.images} if turn.images else {})})
            out.append({"role": "assistant", "content": turn.reply})
        out.append({"role": "user", "content": prompt, **({"images": images} if images else {})})
        return out

    def record(self, prompt: str, reply: str, model: str, *, interrupted: bool = False,
               eval_count: int | None = None, images: list[str] | None = None) -> Turn | None:
        """Add a turn; a reply interrupted before its first token adds nothing, so the next
        turn does not send the model an empty assistant message."""
        if interrupted and not reply:
            return None
        turn = Turn(prompt=prompt, reply=reply, model=model, interrupted=interrupted, eval_count=eval_count,
                    images=images or None)
        self.turns.append(turn)
        self.model = model
        return turn

    def clear(self) -> None:
        self.turns.clear()

    def transcript(self) -> str:
        """Readable text of the whole conversation (``%ollama history``)."""
        lines = [f"# session {self.name!r}" + (f" · system: {self.system}" if self.system else "")]
        if not self.turns:
            lines.append("(no turns yet)")
        for i, turn in enumerate(self.turns, 1):
            shown = f" [{len(turn.images)} image(s)]" if turn.images else ""
            lines.append(f"[{i}] user: {turn.prompt}{shown}")
            mark = " [interrupted]" if turn.interrupted else ""
            lines.append(f"[{i}] {turn.model}{mark}: {turn.reply}")
        return "\n".join(lines)


class Sessions:
    """Named sessions, created on first use."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def get(self, name: str = DEFAULT_SESSION) -> Session:
        session = self._sessions.get(name)
        if session is None:
            session = self._sessions[name] = Session(name)
        return session

    def __contains__(self, name: object) -> bool:
        return name in self._sessions

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    def names(self) -> list[str]:
        return list(self._sessions)

    def reset(self, name: str = DEFAULT_SESSION) -> bool:
        """Forget one conversation (its system prompt too); False when there was none."""
        return self._sessions.pop(name, None) is not None

    def reset_all(self) -> int:
        count = len(self._sessions)
        self._sessions.clear()
        return count


__all__ = ["DEFAULT_SESSION", "Session", "Sessions", "Turn"]
