"""Request metrics over HTTP: ``/metrics`` for Prometheus, ``/api/metrics`` as JSON, and a live
performance dashboard at ``/dashboard``.

The dashboard is one self-contained page, ``static/dashboard.html`` (inline CSS and JS, charts
drawn as inline SVG; nothing is fetched from the internet), read from the package and served
as it is. It must keep working when the browser reaches the kernel through jupyter-server-proxy
at ``<base>/proxy/<port>/dashboard``. Two consequences shape it:

* every URL in the page is relative (``dashboard/events``, ``api/metrics``), so it resolves under
  any prefix;
* live updates use Server-Sent Events (``/dashboard/events``, sent with aiohttp-sse): the proxy
  buffers whole responses unless the request accepts ``text/event-stream``, which is exactly
  what ``EventSource`` sends. If the event stream cannot be opened at all, the page falls back
  to polling ``api/metrics``.

PNG renderings of the same plots (``/dashboard/plot/<name>.png``, see :mod:`ollama_nb.plots`)
serve clients without JavaScript and notebooks. Pandas and matplotlib run in worker threads,
never on the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from ..manager.records import RequestRecord
from ..observe.metrics import CONTENT_TYPE, MetricsRecorder, row_of
from ..observe.plots import PLOT_NAMES, render_png
from .keys import MANAGER, METRICS
from .streaming import event_source

log = logging.getLogger("ollama_nb.server.dashboard")

__all__ = ["setup_metrics"]

_STREAMS: web.AppKey[set[asyncio.Queue[Any]]] = web.AppKey("ollama_nb.dashboard_streams")
_HEARTBEAT_S = 15.0  # the ``: ping`` period; a failed ping is also how a departed client is noticed
_QUEUE_MAX = 1000
_RETRY = b"retry: 2000\n\n"  # a field-only event: reconnect after 2 s; nothing is dispatched
_PAGE = Path(__file__).parent / "static" / "dashboard.html"
_PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "img-src 'self' data:; connect-src 'self'")  # data: the empty favicon


def setup_metrics(app: web.Application) -> None:
    """Register the metrics routes and attach a :class:`MetricsRecorder` to the app's manager.

    An existing recorder at ``app[METRICS]`` is reused (a notebook may already be recording);
    the observer added here is removed again when the app is cleaned up.
    """
    manager = app[MANAGER]
    recorder = app.get(METRICS) or MetricsRecorder()
    unwatch = recorder.watch(manager)
    app[METRICS] = recorder
    app[_STREAMS] = set()

    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/api/metrics", metrics_json)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_get("/dashboard/", dashboard_slash)
    app.router.add_get("/dashboard/events", dashboard_events)
    app.router.add_get("/dashboard/plot/{name}.png", dashboard_plot)

    async def close_streams(app: web.Application) -> None:
        # Open event streams would otherwise hold the server's shutdown for its whole timeout.
        for queue in list(app[_STREAMS]):
            _offer(queue, None, force=True)

    async def detach(app: web.Application) -> None:
        unwatch()

    app.on_shutdown.append(close_streams)
    app.on_cleanup.append(detach)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _since(request: web.Request, default: int) -> int:
    """``Last-Event-ID`` (an EventSource reconnecting) wins over ``?since=``."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("since")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"since must be an integer sequence number, got {raw!r}"}),
            content_type="application/json",
        ) from None
    return max(value, 0)


async def prometheus_metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition format 0.0.4 (the loaded-model gauges call ``ps()``)."""
    body = await asyncio.to_thread(request.app[METRICS].prometheus_text)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def metrics_json(request: web.Request) -> web.Response:
    """``{"records": [...], "last_seq": n, "models": [...]}``; ``?since=n`` returns only the
    records numbered above n, which is how the dashboard polls without repeats."""
    recorder = request.app[METRICS]
    since = _since(request, 0)

    def build() -> bytes:
        last = recorder.last_seq  # read first: polling from it may repeat a row, never skip one
        payload = {"records": recorder.rows(since), "last_seq": last, "models": recorder.summary()}
        return json.dumps(payload, separators=(",", ":")).encode()

    body = await asyncio.to_thread(build)
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


@cache
def _page() -> bytes:
    """The page's bytes, read once: it is part of the package and does not change at run time."""
    return _PAGE.read_bytes()


async def dashboard_page(request: web.Request) -> web.Response:
    return web.Response(body=_page(), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": _PAGE_CSP})


async def dashboard_slash(request: web.Request) -> web.Response:
    # The page's relative URLs assume it lives at .../dashboard; a relative redirect keeps any prefix.
    raise web.HTTPFound(location="../dashboard")


def _offer(queue: asyncio.Queue[Any], item: Any, *, force: bool = False) -> None:
    """Put without blocking; a reader too slow to keep up loses events (it can resync by
    polling), except the end-of-stream marker, which makes room for itself."""
    if force:
        while queue.full():
            queue.get_nowait()
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        pass


async def _send(response: EventSourceResponse, seq: int, r: RequestRecord) -> None:
    data = json.dumps(row_of(seq, r), separators=(",", ":"))
    await response.send(data, id=str(seq), event="record")


async def dashboard_events(request: web.Request) -> web.StreamResponse:
    """SSE: one ``record`` event per finished request, ``id`` = its sequence number.

    Without ``since``/``Last-Event-ID`` only new records are sent; with them, the buffered
    records above that number come first, so a reconnecting page misses nothing. A ``: ping``
    comment every ``_HEARTBEAT_S`` keeps proxies from closing an idle stream; once a ping finds
    the client gone, the stream ends (a server that cancels handlers on hang-up ends it sooner).
    """
    recorder = request.app[METRICS]
    since = _since(request, recorder.last_seq)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_QUEUE_MAX)

    def on_record(seq: int, r: RequestRecord) -> None:  # on whichever thread finished the request
        try:
            loop.call_soon_threadsafe(_offer, queue, (seq, r))
        except RuntimeError:  # the loop is gone: the server stopped
            pass

    unsubscribe = recorder.subscribe(on_record)  # before reading the backlog: no gap
    streams = request.app[_STREAMS]
    streams.add(queue)
    response = event_source(ping_interval=_HEARTBEAT_S)
    try:
        await response.prepare(request)
        async with response:  # on leaving: the pings stop
            await response.write(_RETRY)
            sent = since
            for seq, r in await asyncio.to_thread(recorder.numbered, since):
                await _send(response, seq, r)
                sent = seq
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), _HEARTBEAT_S)
                except asyncio.TimeoutError:
                    if response.is_connected():
                        continue
                    break  # a ping failed: the client has left
                if item is None:
                    break
                seq, r = item
                if seq > sent:
                    await _send(response, seq, r)
                    sent = seq
    except (ConnectionResetError, asyncio.TimeoutError):
        pass  # the client left, or stopped reading (aiohttp-sse 3.0 then aborts the connection)
    finally:
        unsubscribe()
        streams.discard(queue)
    return response


async def dashboard_plot(request: web.Request) -> web.Response:
    """``/dashboard/plot/<name>.png``: a matplotlib rendering of the buffered records."""
    name = request.match_info["name"]
    if name not in PLOT_NAMES:
        return _error(404, f"plot '{name}' not found; choose one of {', '.join(PLOT_NAMES)}")
    recorder = request.app[METRICS]

    def render() -> bytes:
        return render_png(name, recorder.to_dataframe())

    png = await asyncio.to_thread(render)
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})

