"""How a generation's pieces become Ollama's chunks: ``/api/generate`` and ``/api/chat`` differ
only here, so the manager runs both through one pipeline (``manager.pipeline``) and hands it one
of these.

The chat shape holds text back while it may still turn out to be a tool call: a model that
answers ``<tool_call>{"name": ...`` must reach the client as ``tool_calls``, never as text that
is already on screen. Once the held text can no longer start a call, it is released as one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from ..api.types import ChatResponse, GenerateResponse, Logprob, Message, TokenLogprob
from ..base.timings import Timings
from ..prompt.thinking import ThinkingParser
from ..prompt.toolcalls import may_start_tool_call, parse_tool_calls
from ..runtime import GenerationResult, TokenPiece

__all__ = ["ChatReplies", "GenerateReplies", "Replies"]


class Replies(Protocol):
    """The chunks of one request, in its endpoint's shape."""

    endpoint: str

    def piece(self, piece: TokenPiece) -> Any | None:
        """The chunk for one generated piece, or None while text is held back."""

    def flush(self) -> Iterator[Any]:
        """Chunks for whatever is still held when generation ends."""

    def final(self, result: GenerationResult, timings: Timings, done_reason: str) -> Any:
        """The last chunk: ``done``, its reason and the request's timings."""


def logprob_of(piece: TokenPiece) -> list[Logprob] | None:
    """The piece's log-probability in Ollama's shape (None unless logprobs were asked for)."""
    if piece.logprob is None:
        return None
    top = [TokenLogprob(token=t, logprob=lp) for t, lp in piece.top_logprobs or []]
    return [Logprob(token=piece.text, logprob=piece.logprob, top_logprobs=top)]


class GenerateReplies:
    """``/api/generate``: text as it comes (a thinking model's thinking in ``thinking``); the
    final chunk carries the context unless raw (the text tokens only: an image's KV positions
    have no token ids to hand back)."""

    endpoint = "generate"

    def __init__(self, model: str, *, raw: bool, thinking: ThinkingParser | None = None) -> None:
        self.model = model
        self.raw = raw
        self.thinking = thinking

    def piece(self, piece: TokenPiece) -> GenerateResponse | None:
        thought, text = self.thinking.feed(piece.text) if self.thinking is not None else ("", piece.text)
        if not thought and not text and self.thinking is not None and piece.logprob is None:
            return None
        return GenerateResponse(model=self.model, response=text, thinking=thought or None,
                                logprobs=logprob_of(piece))

    def flush(self) -> Iterator[GenerateResponse]:
        if self.thinking is not None:
            thought, text = self.thinking.flush()
            if thought or text:
                yield GenerateResponse(model=self.model, response=text, thinking=thought or None)

    def final(self, result: GenerationResult, timings: Timings, done_reason: str) -> GenerateResponse:
        return GenerateResponse.finished(timings, model=self.model, done=True, done_reason=done_reason,
                                         context=None if self.raw else [t for t in result.tokens if t >= 0])


class ChatReplies:
    """``/api/chat``: assistant messages; a thinking model's thinking goes in ``thinking``; with
    tools offered, text that may open a tool call is held until it either parses as calls (sent
    as ``tool_calls``) or cannot be one."""

    endpoint = "chat"

    def __init__(self, model: str, *, tool_names: list[str], thinking: ThinkingParser | None = None) -> None:
        self.model = model
        self.tool_names = tool_names
        self.thinking = thinking
        self._held: list[str] = []
        self._holding = bool(tool_names)

    def _content(self, text: str) -> str | None:
        """What of ``text`` may be shown now (None: held, as it may open a tool call)."""
        if self._holding:
            self._held.append(text)
            if may_start_tool_call("".join(self._held)):
                return None
            self._holding = False
            text, self._held = "".join(self._held), []
        return text

    def piece(self, piece: TokenPiece) -> ChatResponse | None:
        thought, text = self.thinking.feed(piece.text) if self.thinking is not None else ("", piece.text)
        content = self._content(text) if text or self.thinking is None else ""
        if content is None and not thought:
            return None
        if not content and not thought and self.thinking is not None and piece.logprob is None:
            return None
        return ChatResponse(model=self.model, logprobs=logprob_of(piece),
                            message=Message(role="assistant", content=content or "", thinking=thought or None))

    def flush(self) -> Iterator[ChatResponse]:
        if self.thinking is not None:
            thought, text = self.thinking.flush()
            if thought:
                yield ChatResponse(model=self.model, message=Message(role="assistant", content="", thinking=thought))
            if text:
                shown = self._content(text)
                if shown:
                    yield ChatResponse(model=self.model, message=Message(role="assistant", content=shown))
        if not self._held:
            return
        held, self._held = "".join(self._held), []
        calls = parse_tool_calls(held, self.tool_names)
        message = (Message(role="assistant", content="", tool_calls=calls) if calls
                   else Message(role="assistant", content=held))
        yield ChatResponse(model=self.model, message=message)

    def final(self, result: GenerationResult, timings: Timings, done_reason: str) -> ChatResponse:
        return ChatResponse.finished(timings, model=self.model, done=True, done_reason=done_reason)
