"""Request metrics over HTTP: ``/metrics`` for Prometheus, ``/api/metrics`` as JSON, and a live
performance dashboard at ``/dashboard``.

The dashboard is one self-contained page (inline CSS and JS, charts drawn as inline SVG; nothing
is fetched from the internet) that must keep working when the browser reaches the kernel through
jupyter-server-proxy at ``<base>/proxy/<port>/dashboard``. Two consequences shape it:

* every URL in the page is relative (``dashboard/events``, ``api/metrics``), so it resolves under
  any prefix;
* live updates use Server-Sent Events (``/dashboard/events``): the proxy buffers whole responses
  unless the request accepts ``text/event-stream``, which is exactly what ``EventSource`` sends.
  If the event stream cannot be opened at all, the page falls back to polling ``api/metrics``.

PNG renderings of the same plots (``/dashboard/plot/<name>.png``, see :mod:`ollama_nb.plots`)
serve clients without JavaScript and notebooks. Pandas and matplotlib run in worker threads,
never on the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from ..manager.records import RequestRecord
from ..observe.metrics import CONTENT_TYPE, MetricsRecorder, row_of
from .keys import MANAGER, METRICS

log = logging.getLogger("ollama_nb.server.dashboard")

__all__ = ["setup_metrics"]

_STREAMS: web.AppKey[set[asyncio.Queue[Any]]] = web.AppKey("ollama_nb.dashboard_streams")
_HEARTBEAT_S = 15.0
_QUEUE_MAX = 1000
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx-style proxies: do not buffer
}
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


async def dashboard_page(request: web.Request) -> web.Response:
    return web.Response(text=DASHBOARD_HTML, content_type="text/html",
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


def _event(seq: int, r: RequestRecord) -> bytes:
    data = json.dumps(row_of(seq, r), separators=(",", ":"))
    return f"id: {seq}\nevent: record\ndata: {data}\n\n".encode()


async def dashboard_events(request: web.Request) -> web.StreamResponse:
    """SSE: one ``record`` event per finished request, ``id`` = its sequence number.

    Without ``since``/``Last-Event-ID`` only new records are sent; with them, the buffered
    records above that number come first, so a reconnecting page misses nothing.
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
    response = web.StreamResponse(headers=_SSE_HEADERS)
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        sent = since
        for seq, r in await asyncio.to_thread(recorder.numbered, since):
            await response.write(_event(seq, r))
            sent = seq
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), _HEARTBEAT_S)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")  # also notices a client that left
                continue
            if item is None:
                break
            seq, r = item
            if seq > sent:
                await response.write(_event(seq, r))
                sent = seq
    except ConnectionResetError:
        pass
    finally:
        unsubscribe()
        streams.discard(queue)
    return response


async def dashboard_plot(request: web.Request) -> web.Response:
    """``/dashboard/plot/<name>.png``: a matplotlib rendering of the buffered records."""
    from ..observe.plots import PLOT_NAMES  # cheap: plots imports matplotlib only when drawing

    name = request.match_info["name"]
    if name not in PLOT_NAMES:
        return _error(404, f"plot '{name}' not found; choose one of {', '.join(PLOT_NAMES)}")
    recorder = request.app[METRICS]

    def render() -> bytes:
        from ..observe.plots import render_png

        return render_png(name, recorder.to_dataframe())

    png = await asyncio.to_thread(render)
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})


DASHBOARD_HTML = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ollama_nb performance</title>
<link rel="icon" href="data:,">
<style>
  :root { --fg: #1d2430; --muted: #6b7280; --line: #e5e7eb; --bg: #ffffff; --card: #f9fafb; }
  body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
         background: var(--bg); margin: 0; padding: 16px 20px; }
  header { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; }
  h1 { font-size: 20px; margin: 0; }
  #status { color: var(--muted); }
  #status.live::before { content: "\25CF "; color: #16a34a; }
  #status.polling::before { content: "\25CF "; color: #d97706; }
  #status.down::before { content: "\25CF "; color: #dc2626; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 14px;
          margin-top: 14px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
  .card h2 { font-size: 14px; margin: 0 0 6px 0; }
  .chart svg { width: 100%; height: auto; display: block; }
  .legend { font-size: 12px; color: var(--muted); margin-top: 4px; }
  .legend span { margin-right: 12px; white-space: nowrap; }
  .legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px;
              vertical-align: -1px; }
  .table { overflow-x: auto; }
  table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
  th, td { text-align: right; padding: 3px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th:first-child, td:first-child, td.text { text-align: left; }
  th { color: var(--muted); font-weight: 600; }
  .empty { color: var(--muted); padding: 40px 0; text-align: center; }
  a { color: #2563eb; }
  footer { margin-top: 16px; color: var(--muted); font-size: 12px; }
</style>
</head>
<body>
<header>
  <h1>ollama_nb performance</h1>
  <span id="status">connecting…</span>
  <span id="count"></span>
</header>

<div class="grid">
  <div class="card"><h2>Generation speed (tokens/s)</h2><div class="chart" id="c-tps"></div></div>
  <div class="card"><h2>Time to first token (ms)</h2><div class="chart" id="c-ttft"></div></div>
  <div class="card"><h2>Prompt evaluation vs generation (ms, latest requests)</h2>
    <div class="chart" id="c-split"></div></div>
  <div class="card"><h2>Model load wait (ms, latest requests)</h2><div class="chart" id="c-load"></div></div>
</div>

<div class="grid">
  <div class="card"><h2>Per model</h2><div class="table" id="t-models"></div></div>
  <div class="card"><h2>Latest requests</h2><div class="table" id="t-recent"></div></div>
</div>

<footer>
  PNG renderings (matplotlib):
  <a href="dashboard/plot/overview.png" target="_blank">overview</a> ·
  <a href="dashboard/plot/tokens_per_second.png" target="_blank">tokens/s</a> ·
  <a href="dashboard/plot/ttft.png" target="_blank">time to first token</a> ·
  <a href="dashboard/plot/prompt_vs_generation.png" target="_blank">prompt vs generation</a> ·
  <a href="dashboard/plot/load_time.png" target="_blank">load time</a> ·
  data: <a href="api/metrics" target="_blank">api/metrics</a> ·
  <a href="metrics" target="_blank">metrics</a> (Prometheus)
</footer>

<script>
(function () {
  "use strict";
  var MAX_ROWS = 5000, LAST_BARS = 40, POLL_MS = 2000;
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var rows = [], lastSeq = 0, redrawQueued = false, polling = false, colours = {};

  function $(id) { return document.getElementById(id); }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function colour(model) {
    if (!(model in colours)) {
      var n = Object.keys(colours).length;
      colours[model] = PALETTE[n % PALETTE.length];
    }
    return colours[model];
  }
  function fmt(v, digits) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    return Number(v).toFixed(digits === undefined ? 1 : digits);
  }
  function clock(t) {
    var d = new Date(t * 1000);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }
  function setStatus(text, cls) { var s = $("status"); s.textContent = text; s.className = cls || ""; }

  function add(row) {
    if (!row || row.seq <= lastSeq) return;
    lastSeq = row.seq;
    rows.push(row);
    if (rows.length > MAX_ROWS) rows.splice(0, rows.length - MAX_ROWS);
    queueRedraw();
  }
  function queueRedraw() {
    if (redrawQueued) return;
    redrawQueued = true;
    (window.requestAnimationFrame || setTimeout)(function () { redrawQueued = false; redraw(); });
  }

  // ---- SVG charts ---------------------------------------------------------------------------
  var W = 560, H = 240, L = 52, R = 12, T = 10, B = 34;

  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function yAxis(maxY) {
    var out = "";
    for (var i = 0; i <= 4; i++) {
      var v = maxY * i / 4, y = T + (H - T - B) * (1 - i / 4);
      out += '<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y + '" y2="' + y +
             '" stroke="#e5e7eb"/>' + '<text x="' + (L - 6) + '" y="' + (y + 4) +
             '" text-anchor="end" font-size="11" fill="#6b7280">' + (+v.toPrecision(3)) + "</text>";
    }
    return out;
  }
  function svg(body) {
    return '<svg viewBox="0 0 ' + W + " " + H + '" role="img">' + body + "</svg>";
  }
  function empty(el, what) { el.innerHTML = '<div class="empty">no ' + what + " yet</div>"; }
  function legend(models) {
    return '<div class="legend">' + models.map(function (m) {
      return '<span><i style="background:' + colour(m) + '"></i>' + esc(m) + "</span>";
    }).join("") + "</div>";
  }

  function timeChart(el, field, scale) {
    var pts = rows.filter(function (r) { return r[field] !== null && r[field] !== undefined; });
    if (!pts.length) return empty(el, "data");
    var t0 = pts[0].started_at, t1 = pts[pts.length - 1].started_at;
    if (t1 - t0 < 1) { t0 -= 1; t1 += 1; }
    var maxY = niceMax(Math.max.apply(null, pts.map(function (r) { return r[field] * scale; })) * 1.05);
    function X(t) { return L + (W - L - R) * (t - t0) / (t1 - t0); }
    function Y(v) { return T + (H - T - B) * (1 - v / maxY); }
    var body = yAxis(maxY), models = [];
    for (var i = 0; i <= 4; i++) {
      var t = t0 + (t1 - t0) * i / 4;
      var anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
      body += '<text x="' + X(t) + '" y="' + (H - B + 16) + '" text-anchor="' + anchor + '" font-size="11" ' +
              'fill="#6b7280">' + clock(t) + "</text>";
    }
    var byModel = {};
    pts.forEach(function (r) { (byModel[r.model] = byModel[r.model] || []).push(r); });
    Object.keys(byModel).sort().forEach(function (m) {
      models.push(m);
      var c = colour(m), line = byModel[m].map(function (r) {
        return X(r.started_at).toFixed(1) + "," + Y(r[field] * scale).toFixed(1);
      });
      body += '<polyline fill="none" stroke="' + c + '" stroke-width="1.5" points="' + line.join(" ") + '"/>';
      byModel[m].forEach(function (r) {
        body += '<circle cx="' + X(r.started_at).toFixed(1) + '" cy="' + Y(r[field] * scale).toFixed(1) +
                '" r="2.8" fill="' + c + '"><title>#' + r.seq + " " + esc(m) + ": " +
                fmt(r[field] * scale) + "</title></circle>";
      });
    });
    el.innerHTML = svg(body) + legend(models);
  }

  function barChart(el, list, stacks, legendItems) {
    if (!list.length) return empty(el, "requests");
    var totals = list.map(function (r) {
      return stacks.reduce(function (s, k) { return s + (r[k.field] || 0) * k.scale; }, 0);
    });
    var maxY = niceMax(Math.max.apply(null, totals) * 1.05);
    var slot = (W - L - R) / list.length, bw = Math.max(1, slot * 0.8), body = yAxis(maxY);
    function Y(v) { return T + (H - T - B) * (1 - v / maxY); }
    list.forEach(function (r, i) {
      var x = L + slot * i + (slot - bw) / 2, base = 0;
      stacks.forEach(function (k) {
        var v = (r[k.field] || 0) * k.scale;
        body += '<rect x="' + x.toFixed(1) + '" width="' + bw.toFixed(1) + '" y="' + Y(base + v).toFixed(1) +
                '" height="' + Math.max(0, Y(base) - Y(base + v)).toFixed(1) + '" fill="' +
                (k.colour || colour(r.model)) + '"><title>#' + r.seq + " " + esc(r.model) + " " +
                k.label + ": " + fmt(v) + " ms</title></rect>";
        base += v;
      });
      if (list.length <= 20 || i % Math.ceil(list.length / 20) === 0) {
        body += '<text x="' + (x + bw / 2).toFixed(1) + '" y="' + (H - B + 14) +
                '" text-anchor="middle" font-size="10" fill="#6b7280">#' + r.seq + "</text>";
      }
    });
    el.innerHTML = svg(body) + legendItems;
  }

  function table(el, head, body) {
    el.innerHTML = "<table><thead><tr>" + head.map(function (h) { return "<th>" + h + "</th>"; }).join("") +
                   "</tr></thead><tbody>" + body.join("") + "</tbody></table>";
  }

  function median(xs) {
    if (!xs.length) return null;
    var s = xs.slice().sort(function (a, b) { return a - b; }), m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  }

  function redraw() {
    $("count").textContent = rows.length ? rows.length + " requests" : "";
    timeChart($("c-tps"), "tokens_per_second", 1);
    timeChart($("c-ttft"), "ttft_ns", 1e-6);
    var gen = rows.filter(function (r) { return r.endpoint !== "embed"; }).slice(-LAST_BARS);
    barChart($("c-split"), gen, [
      {field: "prompt_eval_ns", scale: 1e-6, label: "prompt eval", colour: "#4C72B0"},
      {field: "eval_ns", scale: 1e-6, label: "generation", colour: "#DD8452"}
    ], '<div class="legend"><span><i style="background:#4C72B0"></i>prompt eval</span>' +
       '<span><i style="background:#DD8452"></i>generation</span></div>');
    var latest = rows.slice(-LAST_BARS), seen = {};
    latest.forEach(function (r) { seen[r.model] = 1; });
    barChart($("c-load"), latest, [{field: "load_ns", scale: 1e-6, label: "load"}],
             legend(Object.keys(seen).sort()));

    var groups = {};
    rows.forEach(function (r) { (groups[r.model] = groups[r.model] || []).push(r); });
    table($("t-models"), ["model", "requests", "tokens", "mean tok/s", "last tok/s", "median TTFT ms",
                          "max load ms"],
      Object.keys(groups).sort().map(function (m) {
        var g = groups[m], tps = g.map(function (r) { return r.tokens_per_second; })
                                  .filter(function (v) { return v !== null; });
        var ttft = g.map(function (r) { return r.ttft_ns; }).filter(function (v) { return v !== null; });
        return '<tr><td><i style="display:inline-block;width:9px;height:9px;background:' + colour(m) +
               '"></i> ' + esc(m) + "</td><td>" + g.length + "</td><td>" +
               g.reduce(function (s, r) { return s + r.eval_count; }, 0) + "</td><td>" +
               fmt(tps.length ? tps.reduce(function (a, b) { return a + b; }, 0) / tps.length : null) +
               "</td><td>" + fmt(tps.length ? tps[tps.length - 1] : null) + "</td><td>" +
               fmt(ttft.length ? median(ttft) / 1e6 : null) + "</td><td>" +
               fmt(Math.max.apply(null, g.map(function (r) { return r.load_ns / 1e6; }))) + "</td></tr>";
      }));
    table($("t-recent"), ["#", "time", "model", "endpoint", "prompt", "tokens", "tok/s", "TTFT ms",
                          "load ms", "total ms", "reason"],
      rows.slice(-15).reverse().map(function (r) {
        return "<tr><td>" + r.seq + "</td><td>" + clock(r.started_at) + '</td><td class="text">' +
               esc(r.model) + '</td><td class="text">' + esc(r.endpoint) + "</td><td>" +
               r.prompt_eval_count + "</td><td>" + r.eval_count + "</td><td>" + fmt(r.tokens_per_second) +
               "</td><td>" + fmt(r.ttft_ns === null ? null : r.ttft_ns / 1e6) + "</td><td>" +
               fmt(r.load_ns / 1e6) + "</td><td>" + fmt(r.total_ns / 1e6) + '</td><td class="text">' +
               esc(r.done_reason || "") + "</td></tr>";
      }));
  }

  // ---- data: one snapshot, then events (or polling when the event stream cannot open) ------
  function fetchSince() {
    return fetch("api/metrics?since=" + lastSeq, {cache: "no-store"}).then(function (res) {
      if (!res.ok) throw new Error("HTTP " + res.status);
      return res.json();
    }).then(function (data) { data.records.forEach(add); });
  }
  function poll() {
    if (polling) return;
    polling = true;
    setStatus("polling every " + POLL_MS / 1000 + " s", "polling");
    (function tick() {
      fetchSince().then(function () { setStatus("polling every " + POLL_MS / 1000 + " s", "polling"); },
                        function () { setStatus("server unreachable, retrying", "down"); })
        .then(function () { setTimeout(tick, POLL_MS); });
    })();
  }
  function listen() {
    if (!window.EventSource) return poll();
    var opened = false, source = new EventSource("dashboard/events?since=" + lastSeq);
    source.addEventListener("open", function () { opened = true; setStatus("live", "live"); });
    source.addEventListener("record", function (e) { add(JSON.parse(e.data)); });
    source.addEventListener("error", function () {
      if (!opened) { source.close(); poll(); } else { setStatus("reconnecting…", "down"); }
    });
  }
  redraw();
  fetchSince().then(listen, function () { setStatus("server unreachable", "down"); poll(); });
})();
</script>
</body>
</html>
"""
