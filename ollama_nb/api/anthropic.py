"""The Anthropic Messages API (``POST /v1/messages``) as a translation around native chat, as
Ollama's ``anthropic`` package does it, so Claude-style agents and the ``anthropic`` client can
use the kernel's models.

The request becomes a native :class:`~ollama_nb.api.types.ChatRequest`; each native chat chunk
becomes Anthropic's reply or its stream events. Field names, ids, stop reasons and error texts
are Ollama's (``anthropic/anthropic.go``): ``msg_`` + 24 hex digits, tool-use ids ``call_`` + 8
characters, ``stop`` → ``end_turn``, ``length`` → ``max_tokens``, any tool call → ``tool_use``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..base.errors import InvalidRequest, OllamaNbError
from .gojson import GoNames, decode_body, parse
from .types import (
    ChatRequest,
    ChatResponse,
    Message,
    Tool,
    ToolCall,
    ToolCallFunction,
    ToolFunction,
)

__all__ = [
    "ANTHROPIC",
    "MessagesRequest",
    "MessagesStream",
    "error_for",
    "estimated_input_tokens",
    "message_reply",
    "messages_request",
    "new_message_id",
    "parse_body",
]

ANTHROPIC = GoNames("anthropic")

#: HTTP status -> Anthropic's ``error.type`` (``NewError`` in Ollama's anthropic package).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AnthropicMessage(_Shape):
    role: str = ""
    content: str | list[dict[str, Any]] = ""


class AnthropicTool(_Shape):
    type: str | None = None
    name: str = ""
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class MessagesRequest(_Shape):
    model: str = ""
    max_tokens: int = 0
    messages: list[AnthropicMessage] = Field(default_factory=list)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = False
    tools: list[AnthropicTool] | None = None
    thinking: dict[str, Any] | None = None
    tool_choice: Any = None  # accepted and ignored, as in Ollama
    metadata: Any = None  # accepted and ignored, as in Ollama


def parse_body(body: bytes) -> MessagesRequest:
    """Decode the body with Go's rules (bad JSON and wrong types get Go's 400 texts)."""
    return parse(MessagesRequest, decode_body(body, MessagesRequest, ANTHROPIC), ANTHROPIC)


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": "req_" + secrets.token_hex(12),
    }


def error_for(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and Anthropic-shaped body for anything a ``/v1/messages`` handler raised."""
    if isinstance(exc, OllamaNbError):
        return exc.status, error_body(exc.status, exc.message)
    if isinstance(exc, ValidationError):
        return 400, error_body(400, "; ".join(str(e.get("msg")) for e in exc.errors(include_url=False)))
    return 500, error_body(500, str(exc) or type(exc).__name__)


# ---- requests ------------------------------------------------------------------------------


def _image(block: dict[str, Any]) -> str:
    """The base64 data of an image block, checked (only base64 sources, as in Ollama)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest("invalid image source")
    if source.get("type") != "base64":
        raise InvalidRequest(f"invalid image source type: {source.get('type')}. Only base64 images are supported.")
    data = source.get("data")
    try:
        base64.b64decode(data if isinstance(data, str) else "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"invalid base64 image data: {exc}") from None
    return str(data)


def _tool_result(block: dict[str, Any]) -> Message:
    content = block.get("content")
    images: list[str] = []
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "image":
                images.append(_image(part))
        content = "".join(texts)
    return Message(role="tool", content=content if isinstance(content, str) else "",
                   images=images or None, tool_call_id=block.get("tool_use_id"))


def _native_message(message: AnthropicMessage) -> list[Message]:
    """One Anthropic message as native messages: its tool results first (each its own ``tool``
    message), then the text, images, thinking and tool calls of the message itself."""
    role = message.role.lower()
    blocks = [{"type": "text", "text": message.content}] if isinstance(message.content, str) else message.content
    texts: list[str] = []
    images: list[str] = []
    calls: list[ToolCall] = []
    thinking: str | None = None
    results: list[Message] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "image":
            images.append(_image(block))
        elif kind == "tool_use":
            if not block.get("id"):
                raise InvalidRequest("tool_use block missing required 'id' field")
            if not block.get("name"):
                raise InvalidRequest("tool_use block missing required 'name' field")
            arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
            calls.append(ToolCall(id=block["id"], function=ToolCallFunction(name=block["name"], arguments=arguments)))
        elif kind == "tool_result":
            results.append(_tool_result(block))
        elif kind == "thinking":
            thinking = str(block.get("thinking", ""))
    out = results
    if texts or images or calls or thinking is not None or not results:
        out.append(Message(role=role, content="".join(texts), images=images or None,
                           tool_calls=calls or None, thinking=thinking))
    return out


def _system(system: str | list[dict[str, Any]] | None) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "".join(str(b.get("text", "")) for b in system if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _think(thinking: dict[str, Any] | None) -> bool | None:
    if not thinking:
        return None
    if thinking.get("type") == "enabled":
        return True
    if thinking.get("type") == "disabled":
        return False
    return None


def messages_request(req: MessagesRequest) -> ChatRequest:
    """``FromMessagesRequest``: the native chat request a ``/v1/messages`` body stands for."""
    if not req.model:
        raise InvalidRequest("model is required")
    if req.max_tokens <= 0:
        raise InvalidRequest("max_tokens is required and must be positive")
    if not req.messages:
        raise InvalidRequest("messages is required")
    messages: list[Message] = []
    system = _system(req.system)
    if system:
        messages.append(Message(role="system", content=system))
    for message in req.messages:
        messages.extend(_native_message(message))
    options: dict[str, Any] = {"num_predict": req.max_tokens}
    if req.stop_sequences:
        options["stop"] = req.stop_sequences
    for key in ("temperature", "top_p", "top_k"):
        value = getattr(req, key)
        if value is not None:
            options[key] = value
    tools = [Tool(function=ToolFunction(name=t.name, description=t.description, parameters=t.input_schema))
             for t in req.tools or []]
    return ChatRequest(model=req.model, messages=messages, stream=req.stream, options=options,
                       tools=tools or None, think=_think(req.thinking))


def estimated_input_tokens(req: MessagesRequest) -> int:
    """What ``message_start`` reports before the prompt is counted: Ollama's estimate, a token
    for every four characters of the request's text."""
    chars = len(_system(req.system))
    for message in req.messages:
        chars += len(message.role)
        chars += len(message.content) if isinstance(message.content, str) else len(json.dumps(message.content))
    for tool in req.tools or []:
        chars += len(tool.name) + len(tool.description or "") + len(json.dumps(tool.input_schema or {}))
    return max(1, chars // 4)


# ---- replies -------------------------------------------------------------------------------

_ID_CHARS = string.ascii_lowercase + string.digits


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def _tool_use_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(8))


def _stop_reason(done_reason: str | None, tool_calls: bool) -> str | None:
    if tool_calls:
        return "tool_use"
    if not done_reason:
        return None
    return {"stop": "end_turn", "length": "max_tokens"}.get(done_reason, "stop_sequence")


def _usage(r: ChatResponse) -> dict[str, int]:
    return {"input_tokens": r.prompt_eval_count or 0, "output_tokens": r.eval_count or 0}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id or _tool_use_id(), "name": call.function.name,
            "input": call.function.arguments}


def message_reply(message_id: str, r: ChatResponse) -> dict[str, Any]:
    """``ToMessagesResponse``: one non-streamed native chat reply as an Anthropic message."""
    content: list[dict[str, Any]] = []
    if r.message.thinking:
        content.append({"type": "thinking", "thinking": r.message.thinking})
    if r.message.content:
        content.append({"type": "text", "text": r.message.content})
    calls = r.message.tool_calls or []
    content.extend(_tool_use(call) for call in calls)
    reply: dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "model": r.model,
                             "content": content}
    reason = _stop_reason(r.done_reason, bool(calls))
    if reason is not None:
        reply["stop_reason"] = reason
    reply["usage"] = _usage(r)
    return reply


Event = tuple[str, dict[str, Any]]


class MessagesStream:
    """Native chat chunks as Anthropic's stream events, in Ollama's order: ``message_start``;
    for each block (thinking, then text, then each tool use) ``content_block_start``, its
    deltas and ``content_block_stop``; then ``message_delta`` with the stop reason and usage,
    and ``message_stop``."""

    def __init__(self, message_id: str, model: str, input_tokens: int) -> None:
        self.id = message_id
        self.model = model
        self.input_tokens = input_tokens
        self._started = False
        self._index = 0
        self._open: str | None = None  # the kind of the block being written
        self._thinking_done = False
        self._tool_calls = False

    def _start(self, kind: str, block: dict[str, Any]) -> Event:
        self._open = kind
        return "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}

    def _delta(self, delta: dict[str, Any]) -> Event:
        return "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _stop(self) -> Event:
        event = ("content_block_stop", {"type": "content_block_stop", "index": self._index})
        if self._open == "thinking":
            self._thinking_done = True
        self._open = None
        self._index += 1
        return event

    def feed(self, r: ChatResponse) -> list[Event]:
        out: list[Event] = []
        if not self._started:
            self._started = True
            out.append(("message_start", {"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "usage": {"input_tokens": r.prompt_eval_count or self.input_tokens, "output_tokens": 0}}}))
        msg = r.message
        if msg.thinking and not self._thinking_done:
            if self._open == "text":
                out.append(self._stop())
            if self._open is None:
                out.append(self._start("thinking", {"type": "thinking", "thinking": ""}))
            out.append(self._delta({"type": "thinking_delta", "thinking": msg.thinking}))
        if msg.content:
            if self._open == "thinking":
                out.append(self._stop())
            if self._open is None:
                out.append(self._start("text", {"type": "text", "text": ""}))
            out.append(self._delta({"type": "text_delta", "text": msg.content}))
        for call in msg.tool_calls or []:
            if self._open is not None:
                out.append(self._stop())
            block = _tool_use(call)
            out.append(self._start("tool_use", {**block, "input": {}}))
            out.append(self._delta({"type": "input_json_delta", "partial_json": json.dumps(block["input"])}))
            out.append(self._stop())
            self._tool_calls = True
        if r.done:
            if self._open is not None:
                out.append(self._stop())
            delta: dict[str, Any] = {}
            reason = _stop_reason(r.done_reason or "stop", self._tool_calls)
            if reason is not None:
                delta["stop_reason"] = reason
            out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(r)}))
            out.append(("message_stop", {"type": "message_stop"}))
        return out
