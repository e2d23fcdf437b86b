"""An OpenAI-compatible engine (vLLM, SGLang, llama-server, LM Studio, ...) as a backend.

It answers the notebook faces with the very types the kernel's own models answer with
(``ChatResponse`` chunks, ``EmbedResponse``, ``ListResponse``), so a ``%%chat`` cell, the chat
panel or ``compare()`` cannot tell it from a local model, except where an engine truly differs:

* chat is ``/v1/chat/completions``, always streamed from the engine with
  ``stream_options.include_usage`` (so the time to the first token can be seen, and the token
  counts come back); a non-streamed call is the stream folded here. Tools and ``format``
  (``response_format``) pass through; tool-call fragments are assembled into Ollama's one
  tool-call chunk.
* generate is a chat of one user message (Ollama's generate applies the model's template too);
  ``raw`` generate and a ``suffix`` are ``/v1/completions``, the engine's plain completion.
* embed is ``/v1/embeddings``; models are ``/v1/models``.
* timings: what the engine reports (llama-server's ``timings``: prompt and generation counts and
  milliseconds; everyone's ``usage``: counts) is used as reported. The time to the first token,
  the total and, when the engine reports no generation time, the generation time are measured
  here and named in ``Timings.client_side``; what nobody measured is in ``Timings.absent``.
* pull, push, create, copy, delete, show, ps and unload are "not supported by this backend".
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

from ..api.collect import collect_chat, collect_generate
from ..api.types import (
    ChatRequest,
    ChatResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    InfoResponse,
    ListModel,
    ListResponse,
    Message,
    ModelDetails,
    ProcessResponse,
    ProgressResponse,
    ShowResponse,
    ToolCall,
    ToolCallFunction,
)
from ..base.errors import BackendError, InvalidRequest, ModelNotFound, NotSupported, OllamaNbError
from ..base.timings import Timings
from ..client import HttpFailure, Transport, Unreachable, read_line, refused_key, unreachable
from .settings import BackendSpec

__all__ = ["OpenAIEngine", "engine_timings"]

# Ollama option -> OpenAI (or the common engine extension) field.
_OPTION_FIELDS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
    "num_predict": "max_tokens", "stop": "stop", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop", "function_call": "stop"}
_IMAGE_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                (b"RIFF", "image/webp"))


def _image_url(data: str) -> dict[str, Any]:
    """An Ollama base64 image as an OpenAI ``image_url`` part (a data URL with its real type)."""
    head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4), validate=False)
    mime = next((m for magic, m in _IMAGE_MAGIC if head.startswith(magic)), "image/png")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.images:
        out["content"] = [{"type": "text", "text": m.content}, *(_image_url(i) for i in m.images)]
    else:
        out["content"] = m.content
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id or f"call_{n}", "type": "function",
                              "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments)}}
                             for n, c in enumerate(m.tool_calls)]
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id or m.tool_name or ""
    return out


def _sampling(options: dict[str, Any] | None) -> dict[str, Any]:
    return {_OPTION_FIELDS[k]: v for k, v in (options or {}).items() if k in _OPTION_FIELDS and v is not None}


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt, "strict": True}}
    raise InvalidRequest(f"invalid format {fmt!r}", hint='use "json" or a JSON schema')


def engine_timings(started: int, first: int | None, last: int | None, usage: dict[str, Any] | None,
                   timings: dict[str, Any] | None) -> Timings:
    """One reply's :class:`Timings` from what the engine reported plus the clock here.

    ``started``, ``first`` and ``last`` are ``perf_counter_ns`` readings taken here: the request
    sent, the first and the last token received."""
    now = time.perf_counter_ns()
    usage = usage or {}
    fields: dict[str, Any] = {"total_duration": now - started,
                              "ttft_duration": None if first is None else first - started}
    here = ["total_duration", "ttft_duration"]
    absent = ["load_duration", "queue_duration"]
    if timings and "predicted_n" in timings:  # llama-server measures both phases itself
        fields.update(prompt_eval_count=int(timings.get("prompt_n") or 0),
                      prompt_eval_duration=int(float(timings.get("prompt_ms") or 0) * 1e6),
                      eval_count=int(timings.get("predicted_n") or 0),
                      eval_duration=int(float(timings.get("predicted_ms") or 0) * 1e6))
    else:
        absent.append("prompt_eval_duration")
        if "completion_tokens" in usage:
            fields["prompt_eval_count"] = int(usage.get("prompt_tokens") or 0)
            fields["eval_count"] = int(usage.get("completion_tokens") or 0)
        else:
            absent += ["prompt_eval_count", "eval_count"]
        if first is not None and last is not None and last > first:
            fields["eval_duration"] = last - first
            here.append("eval_duration")
        else:
            absent.append("eval_duration")
    return Timings(**fields, client_side=tuple(here), absent=tuple(absent))


class _Assembly:
    """What a streamed completion has said so far beyond its text: tool-call fragments (by index),
    the finish reason, the usage and the engine's own timings."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None

    def absorb(self, event: dict[str, Any]) -> dict[str, Any]:
        """Remember the event's metadata; return its first choice's delta (or ``{}``)."""
        self.usage = event.get("usage") or self.usage
        self.timings = event.get("timings") or self.timings
        choices = event.get("choices") or []
        if not choices:
            return {}
        choice = choices[0]
        self.finish = choice.get("finish_reason") or self.finish
        delta = choice.get("delta") or {}
        if "text" in choice:  # /v1/completions
            delta = {"content": choice.get("text") or ""}
        for part in delta.get("tool_calls") or []:
            slot = self.calls.setdefault(int(part.get("index", len(self.calls))), {"name": "", "arguments": ""})
            fn = part.get("function") or {}
            slot["id"] = part.get("id") or slot.get("id")
            slot["name"] += fn.get("name") or ""
            slot["arguments"] += fn.get("arguments") or ""
        return delta

    def tool_calls(self, backend: str) -> list[ToolCall]:
        out = []
        for index, call in sorted(self.calls.items()):
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except ValueError:
                raise BackendError(f"backend {backend!r} sent tool-call arguments that are not JSON: "
                                   f"{call['arguments'][:80]!r}") from None
            out.append(ToolCall(id=call.get("id"), function=ToolCallFunction(
                index=index, name=call["name"], arguments=arguments if isinstance(arguments, dict) else {})))
        return out


class OpenAIEngine:
    """A backend that speaks the OpenAI API at ``spec.url`` (with or without its ``/v1``)."""

    kind = "openai"

    def __init__(self, spec: BackendSpec, *, timeout: float | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        url = spec.url.rstrip("/")
        self.url = url.removesuffix("/v1")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"OpenAIEngine({self.name!r}, {self.url!r})"

    # ---- transport ----------------------------------------------------------------------------

    def _transport(self) -> Transport:
        headers = {"Accept": "application/json", "User-Agent": "ollama_nb-client"}
        key = self.spec.api_key()  # read at each request: setting the variable later just works
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return Transport(self.url, timeout=self.timeout, headers=headers)

    def _open(self, method: str, path: str, body: Any = None, *, model: str | None = None) -> Any:
        try:
            return self._transport().open(method, path, body)
        except Unreachable as exc:
            raise unreachable(self.name, self.url, f"unreachable: {exc}") from None
        except HttpFailure as exc:
            raise self._error(exc.status, exc.text, model) from None

    def _error(self, status: int, text: str, model: str | None) -> OllamaNbError:
        if status == 401:
            return refused_key(self.name, self.url, self.spec.api_key_env, text)
        if status == 404 and model:
            exc = ModelNotFound(f"{self.name}/{model}")
            exc.hint = f"backend {self.name!r} says: {text}; `%ollama list` shows its models"
            return exc
        if 400 <= status < 500:
            return InvalidRequest(f"backend {self.name!r}: {text}")
        return BackendError(f"backend {self.name!r} at {self.url} answered {status}: {text}")

    def _json(self, method: str, path: str, body: Any = None, *, model: str | None = None) -> Any:
        conn, resp = self._open(method, path, body, model=model)
        try:
            payload = resp.read()
        except (OSError, ValueError) as exc:
            raise unreachable(self.name, self.url, f"the answer broke off: {exc}") from None
        finally:
            conn.close()
        try:
            return json.loads(payload)
        except ValueError:
            raise BackendError(f"backend {self.name!r} answered {path} with something that is not JSON") from None

    def _events(self, path: str, body: dict[str, Any], model: str) -> Iterator[dict[str, Any]]:
        """The SSE events of a streamed completion until ``[DONE]``; a stream that ends before it,
        or an ``error`` event, raises :class:`BackendError` (the text so far has been yielded)."""
        conn, resp = self._open("POST", path, body, model=model)
        return self._read_events(conn, resp)

    def _read_events(self, conn: Any, resp: Any) -> Iterator[dict[str, Any]]:
        try:
            while True:
                try:
                    line = read_line(resp)
                except Unreachable as exc:
                    raise unreachable(self.name, self.url, str(exc)) from None
                if not line:
                    raise unreachable(self.name, self.url, "the reply ended before it was done")
                line = line.strip()
                if line.startswith(b"error:"):
                    line = b"data:" + line[len(b"error:"):]
                if not line.startswith(b"data:"):
                    continue
                data = line[len(b"data:"):].strip()
                if data == b"[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    error = event["error"]
                    text = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                    raise BackendError(f"backend {self.name!r}: {text}")
                yield event
        finally:
            conn.close()

    # ---- catalog ------------------------------------------------------------------------------

    def list(self) -> ListResponse:
        data = self._json("GET", "/v1/models") or {}
        models = []
        for entry in data.get("data") or []:
            ident = str(entry.get("id", ""))
            meta = entry.get("meta") or {}
            created = entry.get("created")
            models.append(ListModel(
                name=ident, model=ident, size=int(meta.get("size") or 0), digest="",
                modified_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)) if created else "",
                details=ModelDetails(context_length=meta.get("n_ctx_train")),
            ))
        return ListResponse(models=models)

    def _unsupported(self, what: str) -> NotSupported:
        return NotSupported(f"{what} is not supported by this backend: {self.name!r} is an "
                            f"OpenAI-compatible engine at {self.url}",
                            hint="manage its models on that server itself")

    def show(self, name: str, *, verbose: bool = False) -> ShowResponse:
        raise self._unsupported("show")

    def ps(self) -> ProcessResponse:
        raise self._unsupported("ps")

    def info(self) -> InfoResponse:
        raise self._unsupported("info")

    def pull(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        raise self._unsupported("pull")

    def push(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        raise self._unsupported("push")

    def create(self, name: str, modelfile: str | None = None, *, base_dir: str | None = None,
               quantize: str | None = None) -> Iterator[ProgressResponse]:
        raise self._unsupported("create")

    def copy(self, source: str, destination: str) -> None:
        raise self._unsupported("copy")

    def delete(self, name: str) -> None:
        raise self._unsupported("delete")

    def unload(self, name: str) -> bool:
        raise self._unsupported("unload")

    # ---- inference ----------------------------------------------------------------------------

    def chat(self, request: ChatRequest | None = None, /, **fields: Any) -> Any:
        req = request or ChatRequest(**fields)
        chunks = self._chat_chunks(req)
        return chunks if req.stream else collect_chat(chunks)

    def generate(self, request: GenerateRequest | None = None, /, **fields: Any) -> Any:
        req = request or GenerateRequest(**fields)
        if req.context:
            raise InvalidRequest(f"backend {self.name!r} keeps no context between requests",
                                 hint="send the conversation as chat messages instead")
        if req.raw or req.suffix:
            chunks = self._completion_chunks(req)
        else:
            messages = [Message(role="system", content=req.system)] if req.system else []
            messages.append(Message(role="user", content=req.prompt, images=req.images))
            chat = ChatRequest(model=req.model, messages=messages, format=req.format, options=req.options,
                               think=req.think)
            chunks = _generate_from_chat(self._chat_chunks(chat))
        return chunks if req.stream else collect_generate(chunks)

    def _base(self, req: Any) -> dict[str, Any]:
        if not req.model:
            raise InvalidRequest("model is required")
        return {"model": req.model, "stream": True, "stream_options": {"include_usage": True},
                **_sampling(req.options)}

    def _chat_chunks(self, req: ChatRequest) -> Iterator[ChatResponse]:
        body = self._base(req)
        body["messages"] = [_message(m) for m in req.messages]
        if req.tools:
            body["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
        response_format = _response_format(req.format)
        if response_format:
            body["response_format"] = response_format
        if isinstance(req.think, str):
            body["reasoning_effort"] = req.think
        return self._stream("/v1/chat/completions", body, req.model, ChatResponse)

    def _completion_chunks(self, req: GenerateRequest) -> Iterator[GenerateResponse]:
        body = self._base(req)
        body["prompt"] = req.prompt
        if req.suffix:
            body["suffix"] = req.suffix
        return self._stream("/v1/completions", body, req.model, GenerateResponse)

    def _stream(self, path: str, body: dict[str, Any], model: str, cls: type) -> Iterator[Any]:
        started = time.perf_counter_ns()
        events = self._events(path, body, model)  # opened now: a bad model or key fails at the call
        return self._chunks(events, model, cls, started)

    def _chunks(self, events: Iterator[dict[str, Any]], model: str, cls: type, started: int) -> Iterator[Any]:
        seen = _Assembly()
        first: int | None = None
        last: int | None = None
        try:
            for event in events:
                delta = seen.absorb(event)
                text, thinking = delta.get("content") or "", delta.get("reasoning_content") or None
                if not text and not thinking:
                    continue
                last = time.perf_counter_ns()
                first = first if first is not None else last
                yield _chunk(cls, model, text, thinking)
        finally:
            events.close()  # type: ignore[attr-defined]
        calls = seen.tool_calls(self.name)
        if calls:
            yield _chunk(cls, model, "", None, calls)
        timings = engine_timings(started, first, last, seen.usage, seen.timings)
        yield cls.finished(timings, model=model, done=True, done_reason=_FINISH.get(seen.finish or "stop", "stop"),
                           **({"message": Message(role="assistant", content="")} if cls is ChatResponse else {}))

    def embed(self, request: EmbedRequest | None = None, /, **fields: Any) -> EmbedResponse:
        req = request or EmbedRequest(**fields)
        if not req.model:
            raise InvalidRequest("model is required")
        started = time.perf_counter_ns()
        body: dict[str, Any] = {"model": req.model, "input": req.input, "encoding_format": "float"}
        if req.dimensions:
            body["dimensions"] = req.dimensions
        data = self._json("POST", "/v1/embeddings", body, model=req.model) or {}
        vectors = [list(map(float, d.get("embedding") or [])) for d in sorted(data.get("data") or [],
                                                                           key=lambda d: d.get("index", 0))]
        usage = data.get("usage") or {}
        timings = Timings(total_duration=time.perf_counter_ns() - started,
                          prompt_eval_count=int(usage.get("prompt_tokens") or 0),
                          client_side=("total_duration",),
                          absent=("load_duration", "queue_duration", "prompt_eval_duration", "eval_duration",
                                  *(() if "prompt_tokens" in usage else ("prompt_eval_count",))))
        return EmbedResponse.finished(timings, model=req.model, embeddings=vectors)


def _chunk(cls: type, model: str, text: str, thinking: str | None, calls: list[ToolCall] | None = None) -> Any:
    if cls is ChatResponse:
        return ChatResponse(model=model, message=Message(role="assistant", content=text, thinking=thinking,
                                                         tool_calls=calls))
    return GenerateResponse(model=model, response=text, thinking=thinking, tool_calls=calls)


def _generate_from_chat(chunks: Iterator[ChatResponse]) -> Iterator[GenerateResponse]:
    try:
        yield from map(_as_generate, chunks)
    finally:
        chunks.close()  # type: ignore[attr-defined]


def _as_generate(chunk: ChatResponse) -> GenerateResponse:
    """A chat chunk as the generate chunk it stands for (its timings object kept)."""
    out = GenerateResponse.model_validate({**chunk.model_dump(exclude={"message", "logprobs"}),
                                           "response": chunk.message.content, "thinking": chunk.message.thinking,
                                           "tool_calls": chunk.message.tool_calls})
    if chunk.done:
        out._timings = chunk.timings
    return out
