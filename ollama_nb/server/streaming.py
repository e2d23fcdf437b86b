"""JSON and NDJSON replies, and the bridge from the manager's blocking iterators to the loop.

The manager yields chunks from sync iterators whose ``next()`` blocks on a model's worker thread,
and closing such an iterator is what cancels generation. The server loop must never block, so a
:class:`ChunkPump` runs the iterator on an executor thread and hands chunks over; when the HTTP
side gives up (client gone, handler cancelled, server stopping) the pump closes the iterator as
soon as it regains control, i.e. after at most one more token.

:func:`respond_chunks` is Ollama's ``streamResponse``/``waitForStream`` pair: the first chunk is
awaited *before* the response starts, so a missing model, a bad option or a full queue still get
their own status code (404, 400, 503); after that an error can only be a last ``{"error": ...}``
line, as Ollama writes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

from aiohttp import web

from ..errors import OllamaNbError, ServerStopping

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


class ChunkPump:
    """Drive a blocking chunk iterator on an executor thread; consume it with ``async for``.

    ``factory`` runs on the thread too (building the iterator may read manifests or wait for a
    model to load). Errors come out of ``__anext__``; :meth:`aclose` asks the thread to stop and
    close the iterator, without waiting for it, so a handler never hangs on a busy model.
    """

    def __init__(self, factory: Callable[[], Iterator[Any]], *, executor: Executor | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._finished = False
        self._thread_done = self._loop.run_in_executor(executor, self._pump, factory)

    def _hand_over(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))
        except RuntimeError:  # the loop is gone (server stopped): nobody is listening any more
            self._stop.set()

    def _pump(self, factory: Callable[[], Iterator[Any]]) -> None:
        iterator: Iterator[Any] | None = None
        try:
            iterator = factory()
            if not self._stop.is_set():
                for item in iterator:
                    self._hand_over("item", item)
                    if self._stop.is_set():
                        break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._hand_over("error", exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # the manager's iterators cancel generation here
                except Exception:
                    log.exception("closing a chunk iterator failed")
            self._hand_over("end", None)

    def __aiter__(self) -> ChunkPump:
        return self

    async def __anext__(self) -> Any:
        if self._finished:
            raise StopAsyncIteration
        kind, value = await self._items.get()
        if kind == "item":
            return value
        self._finished = True
        if kind == "error":
            raise value
        raise StopAsyncIteration

    def interrupt(self, exc: BaseException) -> None:
        """End the consumer's iteration with ``exc`` (loop thread only); the thread stops too."""
        self._stop.set()
        self._items.put_nowait(("error", exc))

    async def aclose(self) -> None:
        """Stop after the chunk in flight; the worker side closes the iterator by itself."""
        self._stop.set()
        self._finished = True

    async def wait_closed(self) -> None:
        """Wait until the thread has closed the iterator (tests and orderly shutdown)."""
        await asyncio.shield(self._thread_done)


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
            async for chunk in chunks:
                await response.write(dumps(chunk) + b"\n")
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
