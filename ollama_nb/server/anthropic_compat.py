"""The Anthropic Messages API (``POST /v1/messages``), so the ``anthropic`` client and
Claude-style agents can use the kernel's models (translation in :mod:`ollama_nb.api.anthropic`).

Like the ``/v1`` OpenAI routes, the first native chunk is awaited before a stream starts, so
an unknown model or a bad request still gets its status and Anthropic's error body. An error
after that point ends the stream with an ``error`` event in Anthropic's shape, which the
``anthropic`` client raises (Ollama drops it and ends the stream, leaving the client to guess).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..api.anthropic import (
    MessagesStream,
    error_for,
    estimated_input_tokens,
    message_reply,
    messages_request,
    new_message_id,
    parse_body,
)
from .keys import MANAGER
from .streaming import named_events, open_stream, send_events

__all__ = ["setup_anthropic"]

_PING_S = 15.0


def setup_anthropic(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(value).encode(), status=status, content_type="application/json")


def _error(exc: BaseException) -> web.Response:
    if isinstance(exc, web.HTTPException):
        raise exc  # aiohttp's own refusals (a body over the limit): the door answers them
    status, body = error_for(exc)
    return _json(body, status)


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``."""
    manager = request.app[MANAGER]
    try:
        req = parse_body(await request.read())
        native = messages_request(req)
        if native.think and "thinking" not in ((await manager.ashow(native.model)).capabilities or []):
            native.think = None  # as Ollama relaxes it for Claude-style agents, which always ask
        message_id = new_message_id()
        if not native.stream:
            return _json(message_reply(message_id, await manager.achat(native)))
        chunks, first = await open_stream(manager.achat(native))
    except Exception as exc:  # noqa: BLE001 - every failure is answered in Anthropic's shape
        return _error(exc)
    translator = MessagesStream(message_id, req.model, estimated_input_tokens(req))
    events = named_events(chunks, first, translator.feed, lambda exc: [("error", error_for(exc)[1])])
    return await send_events(request, chunks, events, ping_interval=_PING_S)
