"""JSON and NDJSON replies.

The manager's blocking chunk iterators reach the loop through a :class:`~ollama_nb.serving.pump.ChunkPump`;
chunks that are ready together go out in one write.

:func:`respond_chunks` is Ollama's ``streamResponse``/``waitForStream`` pair: the first chunk is
awaited *before* the response starts, so a missing model, a bad option or a full queue still get
their own status code (404, 400, 503); after that an error can only be a last ``{"error": ...}``
line, as Ollama writes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from ..base.errors import OllamaNbError, ServerStopping
from ..serving.pump import ChunkPump

log = logging.getLogger("ollama_nb.server")

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
NDJSON_CONTENT_TYPE = "application/x-ndjson"


def to_jsonable(value: Any) -> Any:
    """A response model as Ollama writes it (``omitempty``), or the value itself."""
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, like Go's ``json.Marshal`` (no spaces, non-ASCII kept as is)."""
    return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":")).encode()


def json_response(value: Any, status: int = 200) -> web.Response:
    """One JSON object with gin's content type (``application/json; charset=utf-8``)."""
    return web.Response(status=status, body=dumps(value), headers={"Content-Type": JSON_CONTENT_TYPE})


def error_response(status: int, message: str) -> web.Response:
    """Ollama's error shape: ``{"error": "<message>"}``."""
    return json_response({"error": message}, status)


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one line for the client; the traceback goes to the log only."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


#: The pumps of the responses in progress, so a stopping server can end them at once.
ACTIVE_PUMPS: web.AppKey[set[ChunkPump]] = web.AppKey("ollama_nb.active_pumps", set)


def setup_streaming(app: web.Application) -> None:
    """Track streams so that a server shutdown ends them with a last ``{"error": "server is
    shutting down"}`` line (and cancels their generation) instead of waiting them out."""
    app[ACTIVE_PUMPS] = set()

    async def end_streams(app: web.Application) -> None:
        for pump in list(app[ACTIVE_PUMPS]):
            pump.interrupt(ServerStopping())

    app.on_shutdown.append(end_streams)


async def respond_chunks(
    request: web.Request,
    factory: Callable[[], Iterator[Any]],
    *,
    stream: bool,
    collect: Callable[[Iterator[Any]], Any],
) -> web.StreamResponse:
    """Answer with NDJSON (``stream``) or with ``collect(chunks)`` as one JSON object.

    Errors raised before the first chunk propagate (the error middleware turns them into a
    status and ``{"error": ...}``); errors after it become the stream's last line.
    """
    chunks = ChunkPump(factory)
    active = request.app.get(ACTIVE_PUMPS)
    if active is not None:
        active.add(chunks)
    try:
        first = await chunks.__anext__()
        if not stream:
            items = [first]
            items.extend([chunk async for chunk in chunks])
            return json_response(collect(iter(items)))
        response = web.StreamResponse(headers={"Content-Type": NDJSON_CONTENT_TYPE})
        await response.prepare(request)
        await response.write(dumps(first) + b"\n")
        try:
            async for batch in chunks.batches():
                await response.write(b"".join([dumps(chunk) + b"\n" for chunk in batch]))
        except OllamaNbError as exc:
            await response.write(dumps({"error": str(exc)}) + b"\n")
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away: nothing left to write to
        except Exception as exc:
            log.exception("%s %s failed while streaming", request.method, request.path)
            await response.write(dumps({"error": one_line(exc)}) + b"\n")
        await response.write_eof()
        return response
    except StopAsyncIteration:
        raise OllamaNbError("no response from the model") from None
    finally:
        if active is not None:
            active.discard(chunks)
        await chunks.aclose()


def last(chunks: Iterator[Any]) -> Any:
    """``collect`` for progress streams: Ollama's non-streamed pull/create answer is the last
    status (normally ``{"status": "success"}``)."""
    final = None
    for final in chunks:
        pass
    return final
