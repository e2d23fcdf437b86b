"""A streamed reply folded into the one response Ollama sends when ``stream`` is false.

The manager (for its non-streaming callers) and the server (which always streams internally, so
a client that hangs up cancels the generation) fold the same way, with these.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .types import ChatResponse, GenerateResponse, Logprob, Message


def collect_generate(chunks: Iterator[GenerateResponse]) -> GenerateResponse:
    """The one response a non-streamed ``/api/generate`` returns: the last chunk's timings with
    every chunk's text and logprobs."""
    parts: list[str] = []
    thoughts: list[str] = []
    logprobs: list[Logprob] = []
    final: GenerateResponse | None = None
    for chunk in chunks:
        parts.append(chunk.response)
        thoughts.append(chunk.thinking or "")
        logprobs.extend(chunk.logprobs or [])
        final = chunk
    assert final is not None
    return final.model_copy(update={"response": "".join(parts), "thinking": "".join(thoughts) or None,
                                    "logprobs": logprobs or None})


def collect_chat(chunks: Iterator[ChatResponse]) -> ChatResponse:
    """The same for ``/api/chat``: the text, thinking and tool calls of every chunk in one message."""
    parts: list[str] = []
    thoughts: list[str] = []
    calls: list[Any] = []
    logprobs: list[Logprob] = []
    final: ChatResponse | None = None
    for chunk in chunks:
        parts.append(chunk.message.content)
        thoughts.append(chunk.message.thinking or "")
        calls.extend(chunk.message.tool_calls or [])
        logprobs.extend(chunk.logprobs or [])
        final = chunk
    assert final is not None
    message = Message(role="assistant", content="".join(parts), thinking="".join(thoughts) or None,
                      tool_calls=calls or None)
    return final.model_copy(update={"message": message, "logprobs": logprobs or None})
