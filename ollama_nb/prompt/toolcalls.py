"""Turn a model's text into Ollama tool calls.

Small models announce tool calls in a few well-known shapes (Hermes/Qwen/SmolLM2
``<tool_call>{...}</tool_call>``, Mistral ``[TOOL_CALLS] [...]``, Llama 3 bare JSON with
``parameters``, ``<|python_tag|>``, fenced ```json blocks). We accept a call only when it names a
tool the request offered, so ordinary JSON in an answer is never mistaken for a call.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterable
from typing import Any

from ..api.types import ToolCall, ToolCallFunction

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCED = re.compile(r"```(?:json|tool_code|tool_call)?\s*(.*?)```", re.S)
_PREFIXES = ("[TOOL_CALLS]", "<|python_tag|>", "<tool_call>", "```")


def new_call_id() -> str:
    """``call_`` + 8 random lower-case alphanumerics, Ollama's id shape."""
    alphabet = string.ascii_lowercase + string.digits
    return "call_" + "".join(secrets.choice(alphabet) for _ in range(8))


def may_start_tool_call(text: str) -> bool:
    """True while streamed text could still turn into a tool call, so it should be held back."""
    head = text.lstrip()
    if not head:
        return True
    return head[0] in "[{<`" and (
        any(p.startswith(head[: len(p)]) or head.startswith(p) for p in _PREFIXES)
        or head[0] in "[{"
    )


def _candidates(text: str) -> Iterable[Any]:
    stripped = text.strip()
    for marker in ("[TOOL_CALLS]", "<|python_tag|>"):
        if marker in stripped:
            stripped = stripped.split(marker, 1)[1].strip()
    blobs = _TAGGED.findall(stripped) or _FENCED.findall(stripped) or [stripped]
    decoder = json.JSONDecoder()
    for blob in blobs:
        blob = blob.strip()
        pos = 0
        while pos < len(blob):
            start = min((i for i in (blob.find("{", pos), blob.find("[", pos)) if i >= 0), default=-1)
            if start < 0:
                break
            try:
                value, end = decoder.raw_decode(blob, start)
            except json.JSONDecodeError:
                pos = start + 1
                continue
            yield from value if isinstance(value, list) else [value]
            pos = end


def _as_call(obj: Any, tool_names: set[str]) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(obj, dict):
        return None
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name")
    if not isinstance(name, str) or name not in tool_names:
        return None
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    return (name, args) if isinstance(args, dict) else None


def parse_tool_calls(text: str, tool_names: Iterable[str]) -> list[ToolCall]:
    """Every tool call in ``text`` that names one of ``tool_names``, in order of appearance."""
    names = set(tool_names)
    if not names or not text.strip():
        return []
    calls: list[ToolCall] = []
    for obj in _candidates(text):
        parsed = _as_call(obj, names)
        if parsed:
            calls.append(
                ToolCall(
                    id=new_call_id(),
                    function=ToolCallFunction(index=len(calls), name=parsed[0], arguments=parsed[1]),
                )
            )
    return calls
