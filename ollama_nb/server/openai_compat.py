"""The OpenAI-compatible API (``/v1/*``), so the ``openai`` package, LangChain, LlamaIndex and
jupyter-ai can use the kernel's models unchanged.

As in Ollama, each route is a translation around the native path: the OpenAI body becomes a
native request (:mod:`ollama_nb.api.openai`), the manager's async face runs it off the event
loop, and each native reply is rewritten into OpenAI's shape. Errors always come back as
``{"error": {"message", "type", "param", "code"}}``, whatever the rest of the server does.

Streaming uses Server-Sent Events (sent with aiohttp-sse). The first native chunk is awaited
before the response is started, so a bad request or an unknown model still gets its proper
status code; an error after that point arrives as a final ``data: {"error": ...}`` event (which
the ``openai`` client raises). When the client goes away, closing the chunk iterator cancels
generation. A stream that runs long carries ``: ping`` comments, which SSE clients (``openai``
among them) skip.

``/v1/responses`` streams *named* events (``event: response.output_text.delta``) with a
``sequence_number`` each, as Ollama's Responses writer does; a failure mid-stream ends it with
``response.failed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web

from ..api.openai import (
    ChatStream,
    CompletionStream,
    chat_completion,
    chat_request,
    completion,
    completion_request,
    embed_request,
    embedding_list,
    error_for,
    model_card,
    model_list,
    new_id,
    parse_body,
)
from ..api.openai_types import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIShape,
)
from ..api.responses import ResponsesStream, complete_response, new_ids, responses_request
from ..api.responses import parse_body as parse_responses_body
from .keys import MANAGER
from .streaming import following, named_events, open_stream, send_events

__all__ = ["setup_openai"]

_PING_S = 15.0  # between ``: ping`` comments, so proxies do not time out a slow generation


def setup_openai(app: web.Application) -> None:
    """Register the ``/v1`` routes on ``app`` (which holds the manager at ``app[MANAGER]``)."""
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/responses", responses)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)


def _text(shape: OpenAIShape) -> str:
    """Compact JSON on one line (JSON escapes newlines), so it is exactly one SSE ``data`` field."""
    return json.dumps(shape.to_dict(), ensure_ascii=False, separators=(",", ":"))


def _json(shape: OpenAIShape, status: int = 200) -> web.Response:
    return web.Response(body=_text(shape).encode(), status=status, content_type="application/json")


def _raw_json(value: Any) -> web.Response:
    return web.Response(body=_line(value).encode(), content_type="application/json")


def _error(exc: BaseException) -> web.Response:
    if isinstance(exc, web.HTTPException):
        raise exc  # aiohttp's own refusals (a body over the limit): the door answers them
    status, body = error_for(exc)
    return _json(body, status)


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def _events(
    chunks: AsyncIterator[Any],
    first: Any,
    translate: Callable[[Any], Sequence[OpenAIShape]],
) -> AsyncGenerator[tuple[str | None, str], None]:
    """The unnamed events of a chat or completion stream: ``first`` and the rest of ``chunks``
    translated, then ``[DONE]``; a failure of generation or translation ends it with an error
    event instead (which the ``openai`` client raises)."""
    try:
        async for item in following(first, chunks):
            for event in translate(item):
                yield None, _text(event)
        yield None, "[DONE]"
    except Exception as exc:  # noqa: BLE001 - after the first byte: report in-band
        _, body = error_for(exc)
        yield None, _text(body)


async def _stream_sse(
    request: web.Request,
    chunks: AsyncIterator[Any],
    first: Any,
    translate: Callable[[Any], Sequence[OpenAIShape]],
) -> web.StreamResponse:
    return await send_events(request, chunks, _events(chunks, first, translate), ping_interval=_PING_S)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    manager = request.app[MANAGER]
    try:
        req = parse_body(ChatCompletionRequest, await request.read())
        native = chat_request(req)
        reply_id, created = new_id("chatcmpl"), int(time.time())
        if not native.stream:
            return _json(chat_completion(reply_id, created, await manager.achat(native)))
        chunks, first = await open_stream(manager.achat(native))
    except Exception as exc:  # noqa: BLE001 - every failure is answered in OpenAI's shape
        return _error(exc)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    translator = ChatStream(reply_id, created, include_usage=include_usage)
    return await _stream_sse(request, chunks, first, translator.feed)


async def completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions`` (legacy text completion; ``echo`` repeats the prompt)."""
    manager = request.app[MANAGER]
    try:
        req = parse_body(CompletionRequest, await request.read())
        native = completion_request(req)
        echo = native.prompt if req.echo else ""
        reply_id, created = new_id("cmpl"), int(time.time())
        if not native.stream:
            return _json(completion(reply_id, created, await manager.agenerate(native), echo=echo))
        chunks, first = await open_stream(manager.agenerate(native))
    except Exception as exc:  # noqa: BLE001 - every failure is answered in OpenAI's shape
        return _error(exc)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    translator = CompletionStream(reply_id, created, include_usage=include_usage, echo=echo)
    return await _stream_sse(request, chunks, first, translator.feed)


async def responses(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses`` (stateless: the conversation travels in ``input``)."""
    manager = request.app[MANAGER]
    try:
        req = parse_responses_body(await request.read())
        native = responses_request(req)
        response_id, item_id = new_ids()
        if not native.stream:
            return _raw_json(complete_response(response_id, item_id, req, await manager.achat(native)))
        chunks, first = await open_stream(manager.achat(native))
    except Exception as exc:  # noqa: BLE001 - every failure is answered in OpenAI's shape
        return _error(exc)
    stream = ResponsesStream(response_id, item_id, req)
    events = named_events(chunks, first, stream.feed,
                          lambda exc: stream.failed("api_error", error_for(exc)[1].error.message))
    return await send_events(request, chunks, events, ping_interval=_PING_S)


async def embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings``: normalised vectors as floats or base64 float32."""
    manager = request.app[MANAGER]
    try:
        req = parse_body(EmbeddingRequest, await request.read())
        reply = await manager.aembed(embed_request(req))
        return _json(embedding_list(req.model, reply, req.encoding_format))
    except Exception as exc:  # noqa: BLE001 - every failure is answered in OpenAI's shape
        return _error(exc)


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``."""
    try:
        return _json(model_list(await request.app[MANAGER].alist()))
    except Exception as exc:  # noqa: BLE001 - every failure is answered in OpenAI's shape
        return _error(exc)


async def retrieve_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``; an unknown model is a 404 ``model 'x' not found``."""
    name = request.match_info["model"]
    try:
        return _json(model_card(name, await request.app[MANAGER].ashow(name)))
    except Exception as exc:  # noqa: BLE001 - every failure is answered in OpenAI's shape
        return _error(exc)
