"""The OpenAI Responses API (``POST /v1/responses``) as a translation around native chat, as
Ollama does it (``openai/responses.go``), so code written for ``client.responses.create`` runs
on the kernel's models.

It is stateless, as in Ollama: every request carries its whole conversation in ``input``. Where
Ollama silently ignores ``previous_response_id`` and ``conversation`` (and so answers as if the
earlier turns never happened), this layer refuses them with a 400 that says what to send instead.

Ollama's choices kept on purpose, because clients can observe them: ids ``resp_<n>``,
``msg_<n>``, ``rs_<n>`` and ``fc_<n>_<i>``; ``temperature`` defaults to 1.0 while ``top_p`` is
left to the model; a reply with tool calls has no message item; thinking comes back as a
``reasoning`` item whose summary and ``encrypted_content`` are the plain thinking text (so a
client that sends the item back gives the model its own thoughts again); ``status`` is always
``completed``; errors are OpenAI's ``{"error": {...}}``.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..base.errors import InvalidRequest
from .gojson import GoNames, decode_body, go_kind, parse
from .openai import image_from_url, think_from_effort
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
    "RESPONSES",
    "ResponsesRequest",
    "ResponsesStream",
    "complete_response",
    "new_ids",
    "parse_body",
    "response_object",
    "responses_request",
]

RESPONSES = GoNames("openai", field_types={"input": "openai.ResponsesInput"})

Event = tuple[str, dict[str, Any]]


class ResponsesRequest(BaseModel):
    """The fields Ollama reads; the rest of OpenAI's request is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = ""
    input: Any = None  # a string or a list of items, checked by ``_items`` with Ollama's texts
    instructions: str = ""
    max_output_tokens: int | None = None
    reasoning: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: dict[str, Any] | None = None
    truncation: str | None = None
    tools: list[dict[str, Any]] | None = None
    stream: bool | None = None
    background: bool = False
    previous_response_id: str | None = None
    conversation: Any = None


def parse_body(body: bytes) -> ResponsesRequest:
    """Decode the body with Go's rules (bad JSON and wrong types get Go's 400 texts)."""
    return parse(ResponsesRequest, decode_body(body, ResponsesRequest, RESPONSES), RESPONSES)


def new_ids() -> tuple[str, str]:
    """A response id and its message item's id, numbered as Ollama numbers them."""
    return f"resp_{random.randrange(999999)}", f"msg_{random.randrange(999999)}"


# ---- requests ------------------------------------------------------------------------------


def _content(parts: Any, where: str) -> tuple[str, list[str]]:
    """The text and images (base64) of a message's (or tool output's) content items; an image
    item is a data URL as in chat completions (one given by file id is skipped, as in Ollama),
    and files are not supported (as in Ollama)."""
    if isinstance(parts, str):
        return parts, []
    if parts is None:
        return "", []
    if not isinstance(parts, list):
        raise InvalidRequest(f"{where} must be a string or array: json: cannot unmarshal {go_kind(parts)} "
                             "into Go value of type []json.RawMessage")
    text, images = [], []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            text.append(str(part.get("text", "")))
        elif kind == "input_image":
            if part.get("image_url"):
                images.append(image_from_url(part["image_url"]))
        elif kind == "input_file":
            raise InvalidRequest("file inputs are not currently supported")
        else:
            raise InvalidRequest(f"{where}[{i}]: unknown content type: {kind or ''}")
    return "".join(text), images


def _arguments(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"failed to parse function call arguments: {exc.msg}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("failed to parse function call arguments: not a JSON object")
    return value


def _items(value: Any) -> list[dict[str, Any]]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value, "_where": "input"}]
    if not isinstance(value, list):
        raise InvalidRequest(f"input must be a string or array: json: cannot unmarshal {go_kind(value)} "
                             "into Go value of type []json.RawMessage")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}]: json: cannot unmarshal {go_kind(item)} into Go value of type struct "
                                 '{ Type string "json:\\"type\\""; Role string "json:\\"role\\"" }')
        kind = item.get("type") or ("message" if item.get("role") else "")
        if kind not in ("message", "function_call", "function_call_output", "reasoning"):
            if not kind:
                raise InvalidRequest(f"input[{i}]: input item missing required 'type' field")
            raise InvalidRequest(f'input[{i}]: unknown input item type: "{kind}"')
        items.append({**item, "type": kind, "_where": f"input[{i}]"})
    return items


def _messages(req: ResponsesRequest) -> list[Message]:
    """``FromResponsesRequest``'s walk over the input items: function calls join the assistant
    message before them, reasoning joins the next assistant message, outputs become ``tool``."""
    messages: list[Message] = []
    if req.instructions:
        messages.append(Message(role="system", content=req.instructions))
    pending_thinking = ""
    items = _items(req.input)
    for i, item in enumerate(items):
        kind = item["type"]
        if kind == "reasoning":
            pending_thinking = str(item.get("encrypted_content") or "".join(
                str(s.get("text", "")) for s in item.get("summary") or [] if isinstance(s, dict)))
        elif kind == "message":
            role = str(item.get("role", "")).lower()
            if role == "developer":  # OpenAI's newer name for the system role
                role = "system"
            content, images = _content(item.get("content"), f"{item['_where']}: content")
            message = Message(role=role, content=content, images=images or None)
            if role == "assistant" and pending_thinking:
                message.thinking, pending_thinking = pending_thinking, ""
            answered = items[i + 1].get("call_id") if i + 1 < len(items) and \
                items[i + 1]["type"] == "function_call_output" else None
            last = messages[-1] if messages else None
            if (role == "assistant" and answered and last is not None and last.role == "assistant"
                    and any(c.id == answered for c in last.tool_calls or [])):
                # replayed between a call and its output: keep the call next to its result
                last.content = "\n".join(t for t in (last.content, content) if t)
                last.images = [*(last.images or []), *images] or None
                if message.thinking:
                    last.thinking = message.thinking
                continue
            messages.append(message)
        elif kind == "function_call":
            call = ToolCall(id=item.get("call_id") or None,
                            function=ToolCallFunction(name=str(item.get("name", "")),
                                                      arguments=_arguments(item.get("arguments"))))
            if messages and messages[-1].role == "assistant":
                messages[-1].tool_calls = [*(messages[-1].tool_calls or []), call]
                target = messages[-1]
            else:
                target = Message(role="assistant", tool_calls=[call])
                messages.append(target)
            if pending_thinking:
                target.thinking, pending_thinking = pending_thinking, ""
        else:  # function_call_output
            content, images = _content(item.get("output"), f"{item['_where']}: output")
            messages.append(Message(role="tool", content=content, images=images or None,
                                    tool_call_id=item.get("call_id") or None))
    if pending_thinking:
        messages.append(Message(role="assistant", thinking=pending_thinking))
    return messages


def _tools(tools: list[dict[str, Any]] | None, prefix: str = "") -> list[Tool]:
    """Responses' flat function tools as native tools; a ``namespace`` expands to its members
    with ``namespace.`` names. Built-in tools (web search, file search) are refused: nothing here
    leaves the machine."""
    out: list[Tool] = []
    for tool in tools or []:
        kind = tool.get("type") or "function"
        name = str(tool.get("name", ""))
        if kind == "namespace":
            out.extend(_tools(tool.get("tools"), f"{prefix}{name}." if name else prefix))
            continue
        if kind != "function":
            raise InvalidRequest(f'tool type "{kind}" is not supported: this server runs function tools only')
        parameters = tool.get("parameters")
        out.append(Tool(function=ToolFunction(
            name=name if not prefix or name.startswith(prefix) else prefix + name,
            description=tool.get("description") or None,
            parameters=parameters if isinstance(parameters, dict) else None)))
    return out


def _format(text: dict[str, Any] | None) -> str | dict[str, Any] | None:
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    if fmt.get("type") == "json_object":
        return "json"
    return None


def responses_request(req: ResponsesRequest) -> ChatRequest:
    """The native chat request a ``/v1/responses`` body stands for."""
    if req.previous_response_id:
        raise InvalidRequest("previous_response_id is not supported: /v1/responses here is stateless, as in "
                             "Ollama; send the earlier turns (with the output items you received) in input")
    if req.conversation:
        raise InvalidRequest("conversation is not supported: /v1/responses here is stateless, as in Ollama; "
                             "send the earlier turns in input")
    messages = _messages(req)
    options: dict[str, Any] = {"temperature": 1.0 if req.temperature is None else req.temperature}
    if req.top_p is not None:
        options["top_p"] = req.top_p
    if req.max_output_tokens is not None:
        options["num_predict"] = req.max_output_tokens
    return ChatRequest(model=req.model, messages=messages, stream=bool(req.stream), options=options,
                       tools=_tools(req.tools) or None, format=_format(req.text),
                       think=think_from_effort((req.reasoning or {}).get("effort")))


# ---- replies -------------------------------------------------------------------------------


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [_text_part(text)] if status == "completed" else []}


def _reasoning_item(item_id: str, thinking: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": thinking}],
            "encrypted_content": thinking}


def _call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    arguments = json.dumps(call.function.arguments, ensure_ascii=False, separators=(",", ":"))
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id or "",
            "name": call.function.name, "arguments": arguments if status == "completed" else ""}


def _usage(r: ChatResponse) -> dict[str, Any]:
    prompt, output = r.prompt_eval_count or 0, r.eval_count or 0
    return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def response_object(response_id: str, req: ResponsesRequest, *, status: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None, created_at: int | None = None) -> dict[str, Any]:
    """The whole ``response`` object, echoing the request's settings as Ollama does."""
    text_format: dict[str, Any] = {"type": "text"}
    fmt = (req.text or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type"):
        text_format = {k: fmt[k] for k in ("type", "name", "schema", "strict") if fmt.get(k) is not None}
    effort, summary = (req.reasoning or {}).get("effort"), (req.reasoning or {}).get("summary")
    now = int(time.time())
    return {
        "id": response_id, "object": "response", "created_at": created_at or now,
        "completed_at": now if status == "completed" else None, "status": status,
        "incomplete_details": None, "model": req.model, "previous_response_id": None,
        "instructions": req.instructions or None, "output": output, "error": None,
        "tools": req.tools or [], "tool_choice": "auto", "truncation": req.truncation or "disabled",
        "parallel_tool_calls": True, "text": {"format": text_format},
        "top_p": 1.0 if req.top_p is None else req.top_p, "presence_penalty": 0, "frequency_penalty": 0,
        "top_logprobs": 0, "temperature": 1.0 if req.temperature is None else req.temperature,
        "reasoning": {"effort": effort, "summary": summary} if effort or summary else None,
        "usage": usage, "max_output_tokens": req.max_output_tokens, "max_tool_calls": None,
        "store": False, "background": req.background, "service_tier": "default", "metadata": {},
        "safety_identifier": None, "prompt_cache_key": None,
    }


def complete_response(response_id: str, item_id: str, req: ResponsesRequest, r: ChatResponse) -> dict[str, Any]:
    """``ToResponse``: one non-streamed native chat reply as a ``response``."""
    output: list[dict[str, Any]] = []
    if r.message.thinking:
        output.append(_reasoning_item(f"rs_{response_id}", r.message.thinking))
    if r.message.tool_calls:
        output.extend(_call_item(f"fc_{response_id}_{i}", call) for i, call in enumerate(r.message.tool_calls))
    else:
        output.append(_message_item(item_id, r.message.content))
    return response_object(response_id, req, status="completed", output=output, usage=_usage(r))


class ResponsesStream:
    """Native chat chunks as the Responses stream's named events, in Ollama's order, each with
    its ``sequence_number``: ``response.created`` and ``response.in_progress``; a reasoning item
    (summary deltas) closed when anything else begins; each tool call as a whole function-call
    item; or a message item with its text deltas; then ``response.completed`` with the whole
    output and the usage."""

    def __init__(self, response_id: str, item_id: str, req: ResponsesRequest) -> None:
        self.response_id, self.item_id, self.req = response_id, item_id, req
        self.created_at = int(time.time())
        self._sequence = 0
        self._started = False
        self._output_index = 0
        self._completed: list[dict[str, Any]] = []
        self._reasoning_id: str | None = None
        self._thinking = ""
        self._text: str | None = None  # None until the message item is opened
        self._tool_calls_sent = False

    def _event(self, kind: str, **data: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return kind, event

    def _response(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        return response_object(self.response_id, self.req, status=status, output=output, usage=usage,
                               created_at=self.created_at)

    def _finish_reasoning(self) -> list[Event]:
        if self._reasoning_id is None:
            return []
        item = _reasoning_item(self._reasoning_id, self._thinking)
        index = self._output_index
        events = [self._event("response.reasoning_summary_text.done", item_id=self._reasoning_id,
                              output_index=index, summary_index=0, text=self._thinking),
                  self._event("response.output_item.done", output_index=index, item=item)]
        self._completed.append(item)
        self._reasoning_id, self._thinking = None, ""
        self._output_index += 1
        return events

    def _thinking_delta(self, thinking: str) -> list[Event]:
        events = []
        if self._reasoning_id is None:
            self._reasoning_id = f"rs_{random.randrange(999999)}"
            events.append(self._event("response.output_item.added", output_index=self._output_index,
                                      item={"id": self._reasoning_id, "type": "reasoning", "summary": []}))
        self._thinking += thinking
        events.append(self._event("response.reasoning_summary_text.delta", item_id=self._reasoning_id,
                                  output_index=self._output_index, summary_index=0, delta=thinking))
        return events

    def _tool_calls(self, calls: list[ToolCall]) -> list[Event]:
        events = self._finish_reasoning()
        for i, call in enumerate(calls):
            index, item_id = self._output_index + i, f"fc_{random.randrange(999999)}_{i}"
            done = _call_item(item_id, call)
            events += [
                self._event("response.output_item.added", output_index=index, item=_call_item(item_id, call, "in_progress")),
                self._event("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                            delta=done["arguments"]),
                self._event("response.function_call_arguments.done", item_id=item_id, output_index=index,
                            arguments=done["arguments"]),
                self._event("response.output_item.done", output_index=index, item=done),
            ]
            self._completed.append(done)
        self._output_index += len(calls)
        self._tool_calls_sent = True
        return events

    def _text_delta(self, text: str) -> list[Event]:
        events = self._finish_reasoning()
        if self._text is None:
            self._text = ""
            events += [
                self._event("response.output_item.added", output_index=self._output_index,
                            item=_message_item(self.item_id, "", "in_progress")),
                self._event("response.content_part.added", item_id=self.item_id, output_index=self._output_index,
                            content_index=0, part=_text_part("")),
            ]
        self._text += text
        events.append(self._event("response.output_text.delta", item_id=self.item_id, output_index=self._output_index,
                                  content_index=0, delta=text, logprobs=[]))
        return events

    def _finish(self, r: ChatResponse) -> list[Event]:
        events = self._finish_reasoning()
        output = list(self._completed)
        if self._text is not None and not self._tool_calls_sent:
            item = _message_item(self.item_id, self._text)
            events += [
                self._event("response.output_text.done", item_id=self.item_id, output_index=self._output_index,
                            content_index=0, text=self._text, logprobs=[]),
                self._event("response.content_part.done", item_id=self.item_id, output_index=self._output_index,
                            content_index=0, part=_text_part(self._text)),
                self._event("response.output_item.done", output_index=self._output_index, item=item),
            ]
            output.append(item)
        events.append(self._event("response.completed", response=self._response("completed", output, _usage(r))))
        return events

    def feed(self, r: ChatResponse) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            events += [self._event("response.created", response=self._response("in_progress", [], None)),
                       self._event("response.in_progress", response=self._response("in_progress", [], None))]
        if r.message.thinking:
            events += self._thinking_delta(r.message.thinking)
        if r.message.tool_calls:
            events += self._tool_calls(r.message.tool_calls)
        elif r.message.content and not self._tool_calls_sent:
            events += self._text_delta(r.message.content)
        if r.done:
            events += self._finish(r)
        return events

    def failed(self, code: str, message: str) -> list[Event]:
        """The end of a stream whose generation failed: ``response.failed`` with the error."""
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append(self._event("response.created", response=self._response("in_progress", [], None)))
        response = self._response("failed", list(self._completed), None)
        response["error"] = {"code": code, "message": message}
        events.append(self._event("response.failed", response=response))
        return events
