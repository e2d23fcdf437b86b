"""Translation between the OpenAI API's shapes and Ollama's native ones, without any HTTP.

Ollama implements ``/v1`` as a thin layer that rewrites an OpenAI request into a native one,
runs the native handler and rewrites each native reply (``openai/openai.go``,
``middleware/openai.go``). Keeping the same split here means every ``/v1`` behaviour rides on
the tested native path, and the translation itself can be tested without a server.

Ollama's choices that a client can observe, kept here on purpose:

* ``temperature`` and ``top_p`` default to **1.0** (OpenAI's defaults), not the native 0.8/0.9;
  for ``/v1/completions`` Ollama also forces ``frequency_penalty``/``presence_penalty`` (0 when
  absent) and treats ``top_p: 0`` as absent.
* ids are ``chatcmpl-<0..998>`` / ``cmpl-<0..998>``; ``system_fingerprint`` is ``fp_ollama``.
* a tool call in the reply turns ``finish_reason`` ``stop`` into ``tool_calls``; message
  ``content`` stays ``""`` beside tool calls; thinking text is returned as ``reasoning``.
* errors are ``{"error": {"message", "type", "param": null, "code": null}}`` with type
  ``invalid_request_error`` (400), ``not_found_error`` (404) or ``api_error`` (anything else),
  and the native message text (``model 'x' not found``).

Where this layer goes beyond Ollama (each is something Ollama silently ignores or mangles):
``max_completion_tokens`` is honoured, ``n`` > 1 is refused instead of quietly answering once,
the ``developer`` role is read as ``system``, a list of text parts stays one message, ``echo``
and ``logprobs`` work on ``/v1/completions``, and a message's text and image parts stay one
message (Ollama splits each image into a message of its own).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import random
import struct
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import ValidationError

from ..base.errors import InvalidRequest, OllamaNbError
from ..base.refs import DEFAULT_NAMESPACE, ModelRef
from .gojson import OPENAI, decode_body, parse
from .openai_types import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatDelta,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    EmbeddingData,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelList,
    OpenAIError,
    OpenAIErrorDetail,
    OpenAIFunctionCall,
    OpenAIModelCard,
    OpenAIShape,
    OpenAIToolCall,
    Usage,
)
from .types import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    ListResponse,
    Logprob,
    Message,
    ShowResponse,
    TokenLogprob,
    ToolCall,
    ToolCallFunction,
)

__all__ = [
    "ChatStream",
    "CompletionStream",
    "chat_completion",
    "chat_request",
    "completion",
    "completion_request",
    "embed_request",
    "embedding_list",
    "error_body",
    "error_for",
    "image_from_url",
    "model_card",
    "model_list",
    "new_id",
    "parse_body",
    "think_from_effort",
]

Shape = TypeVar("Shape", bound=OpenAIShape)

_GO_TYPE_NAMES = {bool: "bool", int: "float64", float: "float64", dict: "map[string]interface {}",
                  list: "[]interface {}", type(None): "<nil>"}
_IMAGE_PREFIXES = ("data:image/jpeg;base64,", "data:image/jpg;base64,", "data:image/png;base64,",
                   "data:image/webp;base64,", "data:;base64,")
_EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
            "max": "max", "xhigh": "max", "ultra": "max"}


# ---- errors --------------------------------------------------------------------------------


def error_body(status: int, message: str) -> OpenAIError:
    """Ollama's ``openai.NewError``: the error type follows from the status alone."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return OpenAIError(error=OpenAIErrorDetail(message=message, type=kind))


def error_for(exc: BaseException) -> tuple[int, OpenAIError]:
    """The status and body for anything a ``/v1`` handler raised."""
    if isinstance(exc, OllamaNbError):
        return exc.status, error_body(exc.status, exc.message)
    if isinstance(exc, ValidationError):
        return 400, error_body(400, _validation_text(exc))
    return 500, error_body(500, str(exc) or type(exc).__name__)


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"invalid value for '{where}': {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def parse_body(shape: type[Shape], body: bytes) -> Shape:
    """Decode a request body into ``shape`` as Ollama's ``/v1`` handlers do: with Go's decoder,
    so bad JSON and wrong types get Go's 400 texts (``api.gojson``)."""
    return parse(shape, decode_body(body, shape, OPENAI), OPENAI)


def new_id(prefix: str) -> str:
    """``chatcmpl-<n>`` / ``cmpl-<n>`` with n in 0..998, exactly as Ollama numbers replies."""
    return f"{prefix}-{random.randrange(999)}"


def _go_type(value: Any) -> str:
    return _GO_TYPE_NAMES.get(type(value), type(value).__name__)


# ---- requests ------------------------------------------------------------------------------


def _stop_list(stop: Any, *, strict: bool) -> list[str] | None:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        if strict:
            for item in stop:
                if not isinstance(item, str):
                    raise InvalidRequest(f"invalid type for 'stop' field: {_go_type(item)}")
        return [s for s in stop if isinstance(s, str)]
    return None


def _check_n(n: int | None) -> None:
    if n is not None and n != 1:
        raise InvalidRequest(f"n={n} is not supported: this server returns one choice per request")


def image_from_url(url: Any) -> str:
    """The base64 payload of an ``image_url``, as Ollama's ``decodeImageURL`` accepts them: a
    ``data:image/{png,jpeg,jpg,webp};base64,`` (or ``data:;base64,``) URL; a web URL is refused
    (nothing is fetched from the network) and anything else is ``invalid image input``."""
    if not isinstance(url, str):
        raise InvalidRequest("invalid message format")
    if url.startswith(("http://", "https://")):
        raise InvalidRequest("image URLs are not currently supported, please use base64 encoded data instead")
    prefix = next((p for p in _IMAGE_PREFIXES if url.startswith(p)), None)
    if prefix is None:
        raise InvalidRequest("invalid image input")
    data = url[len(prefix):]
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        raise InvalidRequest("invalid image input") from None
    return data


def _content_of_parts(parts: list[Any]) -> tuple[str, list[str]]:
    """A list of content parts as one message: its text and its images (base64)."""
    texts, images = [], []
    for part in parts:
        if not isinstance(part, dict):
            raise InvalidRequest("invalid message format")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise InvalidRequest("invalid message format")
            texts.append(part["text"])
        elif kind == "image_url":
            image = part.get("image_url")
            images.append(image_from_url(image.get("url") if isinstance(image, dict) else image))
        elif kind == "input_audio":
            raise InvalidRequest("audio input is not supported: no model here has an audio encoder")
        else:
            raise InvalidRequest("invalid message format")
    return "\n".join(texts), images


def _native_tool_calls(calls: list[OpenAIToolCall] | None) -> list[ToolCall] | None:
    if calls is None:
        return None
    native = []
    for call in calls:
        args = call.function.arguments
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                raise InvalidRequest("invalid tool call arguments") from None
        if not isinstance(args, dict):
            raise InvalidRequest("invalid tool call arguments")
        native.append(ToolCall(id=call.id or None,
                               function=ToolCallFunction(name=call.function.name, arguments=args)))
    return native


def _tool_name(messages: list[ChatCompletionMessage], call_id: str) -> str:
    """The function a tool result answers, found by its call id (the last match wins)."""
    for message in reversed(messages):
        for call in message.tool_calls or []:
            if call.id == call_id:
                return call.function.name
    return ""


def _native_messages(messages: list[ChatCompletionMessage]) -> list[Message]:
    native = []
    for msg in messages:
        role = msg.role.lower()
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        tool_name = None
        if role == "tool":
            tool_name = msg.name or (_tool_name(messages, msg.tool_call_id) if msg.tool_call_id else "")
        images: list[str] = []
        if msg.content is None:
            if msg.tool_calls is None:
                raise InvalidRequest("invalid message content type: <nil>")
            content = ""
        elif isinstance(msg.content, str):
            content = msg.content
        elif isinstance(msg.content, list):
            content, images = _content_of_parts(msg.content)
        else:  # Go decodes content into an interface {} and checks its type afterwards
            raise InvalidRequest(f"invalid message content type: {_go_type(msg.content)}")
        native.append(Message(
            role=role,
            content=content,
            images=images or None,
            thinking=msg.reasoning or None,
            tool_calls=_native_tool_calls(msg.tool_calls),
            tool_name=tool_name or None,
            tool_call_id=msg.tool_call_id or None,
        ))
    return native


def _format(req: ChatCompletionRequest) -> str | dict[str, Any] | None:
    fmt = req.response_format
    if fmt is None:
        return None
    kind = fmt.type.strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema" and fmt.json_schema is not None and isinstance(fmt.json_schema.schema_, dict):
        return fmt.json_schema.schema_
    return None


def _think(req: ChatCompletionRequest) -> bool | str | None:
    return think_from_effort(req.reasoning.effort if req.reasoning is not None else req.reasoning_effort)


def think_from_effort(effort: str | None) -> bool | str | None:
    """Ollama's ``thinkFromReasoningEffort``, shared by chat completions and responses:
    ``none`` turns thinking off, ``minimal`` is ``low``, ``xhigh``/``ultra`` are ``max``."""
    if not effort:
        return None
    if effort not in _EFFORTS:
        raise InvalidRequest(
            f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", "high", '
            '"xhigh", "ultra", "max", or "none")'
        )
    return _EFFORTS[effort]


def chat_request(req: ChatCompletionRequest) -> ChatRequest:
    """``FromChatRequest``: the native request a ``/v1/chat/completions`` body stands for."""
    if not req.messages:
        raise InvalidRequest("[] is too short - 'messages'")
    _check_n(req.n)
    options: dict[str, Any] = {}
    stop = _stop_list(req.stop, strict=False)
    if stop is not None:
        options["stop"] = stop
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if limit is not None:
        options["num_predict"] = limit
    options["temperature"] = 1.0 if req.temperature is None else req.temperature
    if req.seed is not None:
        options["seed"] = req.seed
    if req.frequency_penalty is not None:
        options["frequency_penalty"] = req.frequency_penalty
    if req.presence_penalty is not None:
        options["presence_penalty"] = req.presence_penalty
    options["top_p"] = 1.0 if req.top_p is None else req.top_p
    return ChatRequest(
        model=req.model,
        messages=_native_messages(req.messages),
        stream=bool(req.stream),
        format=_format(req),
        options=options,
        tools=req.tools,
        think=_think(req),
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs or 0,
        keep_alive=req.keep_alive,
    )


def completion_request(req: CompletionRequest) -> GenerateRequest:
    """``FromCompleteRequest``: the native ``/api/generate`` request for ``/v1/completions``."""
    _check_n(req.n)
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequest("prompt must be a string (or a list holding one string)")
        prompt = prompt[0]
    options: dict[str, Any] = {}
    stop = _stop_list(req.stop, strict=True)
    if stop is not None:
        options["stop"] = stop
    if req.max_tokens is not None:
        options["num_predict"] = req.max_tokens
    options["temperature"] = 1.0 if req.temperature is None else req.temperature
    if req.seed is not None:
        options["seed"] = req.seed
    options["frequency_penalty"] = req.frequency_penalty or 0.0
    options["presence_penalty"] = req.presence_penalty or 0.0
    options["top_p"] = req.top_p if req.top_p else 1.0
    top = req.logprobs if req.logprobs and req.logprobs > 0 else 0
    return GenerateRequest(
        model=req.model,
        prompt=prompt,
        suffix=req.suffix or None,
        stream=bool(req.stream),
        options=options,
        logprobs=top > 0,
        top_logprobs=top,
        keep_alive=req.keep_alive,
    )


def embed_request(req: EmbeddingRequest) -> EmbedRequest:
    """The native ``/api/embed`` request; ``""`` embeds one empty string, ``[]`` is refused."""
    fmt = req.encoding_format
    if fmt and fmt.lower() not in ("float", "base64"):
        raise InvalidRequest(
            f"Invalid value for 'encoding_format' = {fmt}. Supported values: ['float', 'base64']."
        )
    data = req.input
    if data == "":
        data = [""]
    if data is None or (isinstance(data, list) and not data):
        raise InvalidRequest("invalid input")
    if not isinstance(data, (str, list)) or (isinstance(data, list) and not all(isinstance(x, str) for x in data)):
        raise InvalidRequest("invalid input type")  # token arrays are not supported, as in Ollama
    return EmbedRequest(model=req.model, input=data, dimensions=req.dimensions or None,
                        keep_alive=req.keep_alive)


# ---- responses -----------------------------------------------------------------------------


def _openai_tool_calls(calls: list[ToolCall] | None) -> list[OpenAIToolCall] | None:
    if not calls:
        return None
    return [
        OpenAIToolCall(
            id=call.id or "",
            index=call.function.index if call.function.index is not None else i,
            type="function",
            function=OpenAIFunctionCall(
                name=call.function.name,
                arguments=json.dumps(call.function.arguments, ensure_ascii=False, separators=(",", ":")),
            ),
        )
        for i, call in enumerate(calls)
    ]


def _token_logprob(lp: TokenLogprob) -> dict[str, Any]:
    return {"token": lp.token, "logprob": lp.logprob,
            "bytes": lp.bytes if lp.bytes is not None else list(lp.token.encode("utf-8"))}


def _choice_logprobs(logprobs: list[Logprob] | None) -> ChoiceLogprobs | None:
    """OpenAI's chat shape; ``bytes`` and ``top_logprobs`` are filled so clients find them."""
    if not logprobs:
        return None
    return ChoiceLogprobs(content=[
        Logprob(**_token_logprob(lp), top_logprobs=[TokenLogprob(**_token_logprob(t)) for t in lp.top_logprobs or []])
        for lp in logprobs
    ])


def _usage(r: ChatResponse | GenerateResponse) -> Usage:
    prompt, completion_ = r.prompt_eval_count or 0, r.eval_count or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion_, total_tokens=prompt + completion_)


def _finish(reason: str | None, tool_calls: bool) -> str | None:
    if reason == "stop" and tool_calls:
        return "tool_calls"
    return reason or None


def chat_completion(reply_id: str, created: int, r: ChatResponse) -> ChatCompletion:
    """``ToChatCompletion``: one non-streamed native chat reply as a ``chat.completion``."""
    calls = _openai_tool_calls(r.message.tool_calls)
    return ChatCompletion(
        id=reply_id,
        created=created,
        model=r.model,
        choices=[ChatChoice(
            index=0,
            message=ChatCompletionMessage(role=r.message.role or "assistant", content=r.message.content,
                                          reasoning=r.message.thinking or None, tool_calls=calls),
            finish_reason=_finish(r.done_reason, bool(calls)),
            logprobs=_choice_logprobs(r.logprobs),
        )],
        usage=_usage(r),
    )


class ChatStream:
    """Turns native chat chunks into ``chat.completion.chunk`` events, as Ollama's ChatWriter:
    a first chunk carrying ``role``, content/reasoning/tool-call deltas, a finish chunk with an
    empty delta, an optional usage chunk (``choices: []``). The caller adds ``[DONE]``."""

    def __init__(self, reply_id: str, created: int, *, include_usage: bool = False) -> None:
        self.id = reply_id
        self.created = created
        self.include_usage = include_usage
        self._first_sent = False
        self._tool_call_sent = False

    def _chunk(self, model: str, delta: ChatDelta, logprobs: ChoiceLogprobs | None = None,
               finish_reason: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=model,
            choices=[ChatChunkChoice(index=0, delta=delta, finish_reason=finish_reason, logprobs=logprobs)],
        )

    def feed(self, r: ChatResponse) -> list[ChatCompletionChunk]:
        out: list[ChatCompletionChunk] = []
        msg = r.message
        calls = _openai_tool_calls(msg.tool_calls)
        empty_trailer = (r.done and self._first_sent and not msg.content and not msg.thinking
                         and not calls and not r.logprobs)
        if not empty_trailer:
            role = None if self._first_sent else "assistant"
            logprobs = _choice_logprobs(r.logprobs)
            if msg.thinking and (msg.content or calls):  # split, as Ollama does
                out.append(self._chunk(r.model, ChatDelta(role=role, reasoning=msg.thinking), logprobs))
                out.append(self._chunk(r.model, ChatDelta(content=msg.content, tool_calls=calls)))
            else:
                out.append(self._chunk(r.model, ChatDelta(role=role, content=msg.content,
                                                          reasoning=msg.thinking or None, tool_calls=calls),
                                       logprobs))
            self._first_sent = True
            self._tool_call_sent = self._tool_call_sent or bool(calls)
        if r.done:
            reason = _finish(r.done_reason or "stop", self._tool_call_sent)
            out.append(self._chunk(r.model, ChatDelta(), finish_reason=reason))
            if self.include_usage:
                out.append(ChatCompletionChunk(id=self.id, created=self.created, model=r.model,
                                               choices=[], usage=_usage(r)))
        return out


def _completion_logprobs(logprobs: list[Logprob] | None, offset: int) -> CompletionLogprobs | None:
    """The legacy completions shape: parallel lists and ``{token: logprob}`` alternatives."""
    if not logprobs:
        return None
    out = CompletionLogprobs()
    for lp in logprobs:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({t.token: t.logprob for t in lp.top_logprobs or []})
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out


def completion(reply_id: str, created: int, r: GenerateResponse, *, echo: str = "") -> Completion:
    """``ToCompletion``: one non-streamed native generate reply as a ``text_completion``."""
    return Completion(
        id=reply_id,
        created=created,
        model=r.model,
        choices=[CompletionChoice(text=echo + r.response, index=0, finish_reason=r.done_reason or None,
                                  logprobs=_completion_logprobs(r.logprobs, len(echo)))],
        usage=_usage(r),
    )


class CompletionStream:
    """Native generate chunks as streamed ``text_completion`` objects (Ollama's CompleteWriter):
    with ``include_usage`` every chunk carries a zeroed ``usage`` and a last ``choices: []``
    chunk carries the real one. With ``echo`` the first chunk starts with the prompt."""

    def __init__(self, reply_id: str, created: int, *, include_usage: bool = False, echo: str = "") -> None:
        self.id = reply_id
        self.created = created
        self.include_usage = include_usage
        self._echo = echo
        self._offset = len(echo)

    def feed(self, r: GenerateResponse) -> list[Completion]:
        text, self._echo = self._echo + r.response, ""
        logprobs = _completion_logprobs(r.logprobs, self._offset)
        self._offset += len(r.response)
        chunk = Completion(
            id=self.id, created=self.created, model=r.model,
            choices=[CompletionChoice(text=text, index=0, finish_reason=r.done_reason or None, logprobs=logprobs)],
            usage=Usage() if self.include_usage else None,
        )
        out = [chunk]
        if r.done and self.include_usage:
            out.append(Completion(id=self.id, created=self.created, model=r.model, choices=[], usage=_usage(r)))
        return out


def _base64_floats(vector: Iterable[float]) -> str:
    values = list(vector)
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def embedding_list(model: str, r: EmbedResponse, encoding_format: str | None = None) -> EmbeddingList:
    """``ToEmbeddingList``; ``base64`` is little-endian float32, what OpenAI's client decodes."""
    as_base64 = (encoding_format or "").lower() == "base64"
    return EmbeddingList(
        model=model,
        data=[EmbeddingData(embedding=_base64_floats(v) if as_base64 else v, index=i)
              for i, v in enumerate(r.embeddings)],
        usage=EmbeddingUsage(prompt_tokens=r.prompt_eval_count or 0, total_tokens=r.prompt_eval_count or 0),
    )


def _unix(timestamp: str | None) -> int:
    if not timestamp:
        return 0
    try:
        return int(_dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _owner(name: str) -> str:
    try:
        return ModelRef.parse(name).namespace
    except OllamaNbError:
        return DEFAULT_NAMESPACE


def model_list(r: ListResponse) -> ModelList:
    """``ToListCompletion``: ``owned_by`` is the namespace (``library`` for official models)."""
    return ModelList(data=[
        OpenAIModelCard(id=m.model or m.name, created=_unix(m.modified_at), owned_by=_owner(m.model or m.name))
        for m in r.models
    ])


def model_card(name: str, r: ShowResponse) -> OpenAIModelCard:
    """``ToModel``: the id is the name exactly as the client asked for it."""
    return OpenAIModelCard(id=name, created=_unix(r.modified_at), owned_by=_owner(name))
