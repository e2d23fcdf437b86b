"""JSON, NDJSON and Server-Sent Events replies.

The manager's blocking chunk iterators reach the loop through a :class:`~ollama_nb.serving.pump.ChunkPump`;
chunks that are ready together go out in one write.

:func:`respond_chunks` is Ollama's ``streamResponse``/``waitForStream`` pair: the first chunk is
awaited *before* the response starts, so a missing model, a bad option or a full queue still get
their own status code (404, 400, 503); after that an error can only be a last ``{"error": ...}``
line, as Ollama writes it.

:func:`event_source` makes the Server-Sent Events responses of ``/v1`` and the dashboard
(aiohttp-sse's ``EventSourceResponse``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from ..base.errors import OllamaNbError, RequestCancelled, ServerStopping
from ..serving.pump import ChunkPump

log = logging.getLogger("ollama_nb.server")

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
NDJSON_CONTENT_TYPE = "application/x-ndjson"

#: Event fields end with a bare LF, as this server has always framed them (aiohttp-sse's default
#: is CRLF; both are valid SSE, but clients and tests that read lines see the same bytes as before).
SSE_SEPARATOR = "\n"


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
#: The same pumps by the ``X-Request-Id`` their client gave, for ``POST /api/cancel``.
BY_REQUEST_ID: web.AppKey[dict[str, ChunkPump]] = web.AppKey("ollama_nb.pumps_by_request_id", dict)
REQUEST_ID_HEADER = "X-Request-Id"


def setup_streaming(app: web.Application) -> None:
    """Track streams so that a server shutdown ends them with a last ``{"error": "server is
    shutting down"}`` line (and cancels their generation) instead of waiting them out."""
    app[ACTIVE_PUMPS] = set()
    app[BY_REQUEST_ID] = {}

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
    """Answer with NDJSON (``stream``; Server-Sent Events when the request accepts them) or
    with ``collect(chunks)`` as one JSON object.

    Errors raised before the first chunk propagate (the error middleware turns them into a
    status and ``{"error": ...}``); errors after it become the stream's last line.
    """
    chunks = ChunkPump(factory)
    active = request.app.get(ACTIVE_PUMPS)
    if active is not None:
        active.add(chunks)
    by_id = request.app.get(BY_REQUEST_ID)
    request_id = request.headers.get(REQUEST_ID_HEADER)
    if by_id is not None and request_id:
        by_id[request_id] = chunks
    try:
        first = await chunks.__anext__()
        if not stream:
            items = [first]
            items.extend([chunk async for chunk in chunks])
            return json_response(collect(iter(items)))
        if wants_events(request):
            return await _events(request, first, chunks)
        response = web.StreamResponse(headers={"Content-Type": NDJSON_CONTENT_TYPE})
        await response.prepare(request)
        await response.write(dumps(first) + b"\n")
        async for lines in _batches_after(request, chunks):
            await response.write(b"".join([line + b"\n" for line in lines]))  # ready together: one write
        await response.write_eof()
        return response
    except StopAsyncIteration:
        raise OllamaNbError("no response from the model") from None
    finally:
        if active is not None:
            active.discard(chunks)
        if by_id is not None and request_id and by_id.get(request_id) is chunks:
            del by_id[request_id]
        await chunks.aclose()


def cancel_request(app: web.Application, request_id: str) -> bool:
    """End the stream a client started with ``X-Request-Id: request_id``, cancelling its
    generation; False when no such request is in progress (it ended, or never existed).

    A client normally cancels by closing its connection. A browser behind jupyter-server-proxy
    cannot: the proxy keeps reading from us after the browser has gone, so the model would
    generate for nobody until the reply ended. Stop buttons there call ``/api/cancel``."""
    pump = app.get(BY_REQUEST_ID, {}).get(request_id)
    if pump is None:
        return False
    pump.interrupt(RequestCancelled())
    return True


def wants_events(request: web.Request) -> bool:
    """A streaming request that accepts ``text/event-stream`` gets its chunks as Server-Sent
    Events instead of NDJSON. jupyter-server-proxy passes a response through unbuffered only when
    the request accepts exactly that, so a browser behind it (the JupyterLab extension) asks for
    events; every Ollama client asks for NDJSON and gets Ollama's bytes."""
    return "text/event-stream" in request.headers.get("Accept", "")


async def _batches_after(request: web.Request, chunks: ChunkPump) -> AsyncIterator[list[bytes]]:
    """The JSON of every chunk after the first, in the batches the pump delivers, then an error
    the stream ended with (as Ollama writes it: one last ``{"error": ...}``)."""
    try:
        async for batch in chunks.batches():
            yield [dumps(chunk) for chunk in batch]
    except OllamaNbError as exc:
        yield [dumps({"error": str(exc)})]
    except (ConnectionError, asyncio.CancelledError):
        raise  # the client went away: nothing left to write to
    except Exception as exc:
        log.exception("%s %s failed while streaming", request.method, request.path)
        yield [dumps({"error": one_line(exc)})]


async def _events(request: web.Request, first: Any, chunks: ChunkPump) -> web.StreamResponse:
    """The same chunks, one ``data:`` event each (the last may be ``{"error": ...}``)."""
    response = event_source(ping_interval=15.0)
    await response.prepare(request)
    async with response:  # on leaving: the pings stop
        await response.send(dumps(first).decode())
        async for lines in _batches_after(request, chunks):
            for line in lines:
                await response.send(line.decode())
    return response


def last(chunks: Iterator[Any]) -> Any:
    """``collect`` for progress streams: Ollama's non-streamed pull/create answer is the last
    status (normally ``{"status": "success"}``)."""
    final = None
    for final in chunks:
        pass
    return final


def event_source(*, ping_interval: float) -> EventSourceResponse:
    """An SSE response (``text/event-stream``, ``Cache-Control: no-cache``, ``X-Accel-Buffering:
    no``) that sends a ``: ping`` comment every ``ping_interval`` seconds, so idle proxies keep
    the connection open and a client that left is noticed; SSE clients ignore comments.

    aiohttp-sse 2.2 (the last release for Python 3.10) takes the ping interval as a property and
    serves any method; 3.0 takes it in the constructor and refuses all but GET unless
    ``allow_all_methods`` is set. The router already decides which methods reach a handler
    (``/v1`` streams answer POSTs), so every method is allowed here.
    """
    accepted = inspect.signature(EventSourceResponse.__init__).parameters
    options: dict[str, Any] = {"sep": SSE_SEPARATOR}
    if "allow_all_methods" in accepted:
        options["allow_all_methods"] = True
    if "ping_interval" in accepted:
        options["ping_interval"] = ping_interval
    response = EventSourceResponse(**options)
    if "ping_interval" not in accepted:
        setattr(response, "ping_interval", ping_interval)  # noqa: B010 - a property on 2.2 only
    return response


async def close_stream(chunks: AsyncIterator[Any]) -> None:
    """Close a native chunk stream (cancelling its generation), whatever kind of iterator it is."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


async def open_stream(start: Awaitable[AsyncIterator[Any]]) -> tuple[AsyncIterator[Any], Any]:
    """Start a native stream and pull its first chunk (None when it ended without one), so a
    translated route can still answer a failure with its status; on failure close the stream
    and re-raise."""
    chunks = await start
    try:
        return chunks, await chunks.__anext__()
    except StopAsyncIteration:
        return chunks, None
    except BaseException:
        await close_stream(chunks)
        raise


async def following(first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``first`` (from :func:`open_stream`) and then the rest of ``chunks``."""
    item = first
    while item is not None:
        yield item
        try:
            item = await chunks.__anext__()
        except StopAsyncIteration:
            item = None


Event = tuple[str, Any]


async def named_events(chunks: AsyncIterator[Any], first: Any, feed: Callable[[Any], Sequence[Event]],
                       failed: Callable[[Exception], Sequence[Event]]) -> AsyncGenerator[tuple[str | None, str], None]:
    """``(event, data)`` pairs of a translated stream with named events (Anthropic's, the
    Responses API's): each native chunk ``feed`` into its events; a failure of generation or
    translation ends the stream with the events ``failed`` makes of it (the dialect's error)."""
    try:
        async for item in following(first, chunks):
            for name, data in feed(item):
                yield name, dumps(data).decode()
    except Exception as exc:  # noqa: BLE001 - after the first byte: report in-band
        for name, data in failed(exc):
            yield name, dumps(data).decode()


async def send_events(request: web.Request, chunks: AsyncIterator[Any],
                      events: AsyncGenerator[tuple[str | None, str], None], *, ping_interval: float) -> web.StreamResponse:
    """Send ``(event name or None, data)`` pairs as SSE, then close both iterators; closing the
    native ``chunks`` cancels generation when the client left early.

    A translated route builds ``events`` so that a failure of generation becomes its dialect's
    last error event, while a failure to write (the client gone) is not answered at all.
    """
    response = event_source(ping_interval=ping_interval)
    try:
        await response.prepare(request)
        async with response:  # on leaving: the pings stop
            async for name, data in events:
                await response.send(data, event=name)
    except (ConnectionResetError, asyncio.TimeoutError):
        pass  # the client left or stopped reading; closing the iterators below cancels generation
    finally:
        await events.aclose()
        await close_stream(chunks)
    return response
