"""Request metrics: the recorder, ``/metrics`` (Prometheus), ``/api/metrics``, the dashboard page,
its event stream and the PNG plots, against a real server and the real smollm2:135m."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from ollama_nb.base.timings import Timings
from ollama_nb.manager.records import RequestRecord
from ollama_nb.observe.metrics import COLUMNS, MetricsRecorder, row_of
from ollama_nb.observe.plots import PLOT_NAMES

from .conftest import SMOLLM
from .openai_fixtures import GREEDY, HELLO, build_app, serve_in_thread

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    async def go() -> tuple[int, Any, bytes]:
        async with aiohttp.ClientSession() as session, session.get(
                url, headers=headers, allow_redirects=False) as res:
            return res.status, res.headers, await res.read()

    return asyncio.run(go())


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = get(url + "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def api_metrics(url: str, since: int | None = None) -> dict[str, Any]:
    status, _, body = get(url + "/api/metrics" + ("" if since is None else f"?since={since}"))
    assert status == 200
    return json.loads(body)


def make_requests(client: openai.OpenAI) -> list[tuple[str, Any]]:
    """Five requests of every kind; returns (endpoint, usage) in the order they finished."""
    done = []
    for limit in (5, 8):
        reply = client.chat.completions.create(model=SMOLLM, messages=HELLO, max_tokens=limit, **GREEDY)
        done.append(("chat", reply.usage))
    chunks = list(client.chat.completions.create(model=SMOLLM, messages=HELLO, max_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))
    done.append(("chat", chunks[-1].usage))
    done.append(("generate", client.completions.create(model=SMOLLM, prompt="Hi", max_tokens=4, **GREEDY).usage))
    done.append(("embed", client.embeddings.create(model=SMOLLM, input=["a cat", "a dog"]).usage))
    return done


# ---- over HTTP -------------------------------------------------------------------------------


def test_prometheus_counters_and_api_rows_match_the_requests(server, client):
    before = scrape(server.url)
    since = api_metrics(server.url)["last_seq"]
    done = make_requests(client)
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for endpoint, count in (("chat", 3), ("generate", 1), ("embed", 1)):
        labels = {"model": SMOLLM, "endpoint": endpoint}
        assert delta("ollama_nb_requests_total", **labels) == count
        usages = [u for e, u in done if e == endpoint]
        assert delta("ollama_nb_prompt_tokens_total", **labels) == sum(u.prompt_tokens for u in usages)
        assert delta("ollama_nb_generated_tokens_total", **labels) == sum(
            getattr(u, "completion_tokens", 0) for u in usages)
    assert delta("ollama_nb_time_to_first_token_seconds_count", model=SMOLLM) == 4  # not the embedding
    assert delta("ollama_nb_load_duration_seconds_count", model=SMOLLM) == 5
    assert delta("ollama_nb_eval_duration_seconds_count", model=SMOLLM) == 4
    assert value(after, "ollama_nb_tokens_per_second", model=SMOLLM) > 0
    assert value(after, "ollama_nb_loaded_models") >= 1  # collected from ps() at scrape time
    assert value(after, "ollama_nb_loaded_model_size_bytes", model=SMOLLM) > 0

    new = api_metrics(server.url, since)
    rows = new["records"]
    assert [r["endpoint"] for r in rows] == [e for e, _ in done]
    assert [r["eval_count"] for r in rows] == [getattr(u, "completion_tokens", 0) for _, u in done]
    assert [r["prompt_eval_count"] for r in rows] == [u.prompt_tokens for _, u in done]
    assert all(r["model"] == SMOLLM for r in rows)
    assert [r["seq"] for r in rows] == list(range(since + 1, since + 6)) and new["last_seq"] == since + 5
    assert rows[0]["tokens_per_second"] > 0 and rows[0]["ttft_s"] > 0 and rows[-1]["ttft_s"] is None
    assert any(m["model"] == SMOLLM and m["requests"] >= 5 for m in new["models"])
    assert api_metrics(server.url, new["last_seq"])["records"] == []

    status, _, body = get(server.url + "/api/metrics?since=soon")
    assert status == 400 and "since" in json.loads(body)["error"]


def test_dashboard_page_uses_only_relative_urls_that_work(server):
    status, headers, body = get(server.url + "/dashboard")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    html = body.decode()
    assert "://" not in html  # nothing from the internet, no absolute URL at all
    urls = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    urls += re.findall(r'(?:fetch|EventSource)\(\s*"([^"]*)"', html)
    assert {"api/metrics?since=", "dashboard/events?since=", "dashboard/plot/overview.png"} <= set(urls)
    urls = [u for u in urls if u != "data:,"]  # the empty favicon: no request at all
    for url in urls:
        assert not url.startswith(("/", "\\")) and ":" not in url, url
        # behind jupyter-server-proxy the page is .../proxy/<port>/dashboard: URLs stay inside
        assert urllib.parse.urljoin("/user/me/proxy/11434/dashboard", url).startswith("/user/me/proxy/11434/")

    async def each_url_answers() -> None:
        async with aiohttp.ClientSession() as session:
            for url in set(urls):
                target = urllib.parse.urljoin(server.url + "/dashboard", url + ("0" if url.endswith("=") else ""))
                async with session.get(target, headers={"Accept": "text/event-stream"}
                                       if "events" in url else None) as res:
                    assert res.status == 200, url  # the event stream is closed unread

    asyncio.run(each_url_answers())
    status, headers, _ = get(server.url + "/dashboard/")
    assert status == 302 and headers["Location"] == "../dashboard"  # relative: keeps any prefix


def test_dashboard_page_is_the_packaged_static_file(server):
    from ollama_nb.server import dashboard

    status, headers, body = get(server.url + "/dashboard")
    page = (Path(dashboard.__file__).parent / "static" / "dashboard.html").read_bytes()
    assert status == 200 and body == page and page.startswith(b"<!DOCTYPE html>")
    assert b'content: "\\25CF "' in page  # the CSS escape arrives as written, one backslash
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'")


async def _next_event(res: aiohttp.ClientResponse) -> tuple[str | None, str | None, Any]:
    """(id, event, data) of the next SSE event, skipping comments and ``retry``."""
    event_id = kind = None
    data: list[str] = []
    while True:
        line = (await res.content.readline()).decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if not line:
            if data:
                return event_id, kind, json.loads("\n".join(data))
            continue
        field, _, text = line.partition(": ")
        if field == "id":
            event_id = text
        elif field == "event":
            kind = text
        elif field == "data":
            data.append(text)


def test_event_stream_delivers_each_new_record(server, client):
    async def go() -> tuple[Any, Any, Any]:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(server.url + "/dashboard/events",
                                   headers={"Accept": "text/event-stream"}) as res:
                assert res.status == 200
                assert res.headers["Content-Type"].startswith("text/event-stream")
                reply = await asyncio.to_thread(
                    client.chat.completions.create, model=SMOLLM, messages=HELLO, max_tokens=7, **GREEDY)
                event = await _next_event(res)
            # a reconnecting EventSource sends Last-Event-ID and gets what it missed first
            async with session.get(server.url + "/dashboard/events",
                                   headers={"Last-Event-ID": str(int(event[0]) - 1)}) as again:
                replayed = await _next_event(again)
        return reply, event, replayed

    reply, (event_id, kind, row), replayed = asyncio.run(go())
    assert kind == "record" and int(event_id) == row["seq"]
    assert row["endpoint"] == "chat" and row["model"] == SMOLLM
    assert row["eval_count"] == reply.usage.completion_tokens == 7 and row["done_reason"] == "length"
    assert replayed == (event_id, "record", row)


def test_plot_pngs(server, client):
    client.chat.completions.create(model=SMOLLM, messages=HELLO, max_tokens=3, **GREEDY)
    for name in PLOT_NAMES:
        status, headers, body = get(f"{server.url}/dashboard/plot/{name}.png")
        assert status == 200 and headers["Content-Type"] == "image/png", name
        assert body.startswith(PNG_MAGIC) and len(body) > 1000
    status, _, body = get(server.url + "/dashboard/plot/nope.png")
    assert status == 404 and "nope" in json.loads(body)["error"]


def test_a_stream_the_client_abandons_is_a_cancel_row(server):
    since = api_metrics(server.url)["last_seq"]

    async def read_one_line_and_hang_up() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            body = {"model": SMOLLM, "prompt": "Write a long story about a dragon.",
                    "options": {**GREEDY, "num_predict": 400}}
            async with session.post(server.url + "/api/generate", json=body) as res:
                assert res.status == 200
                return json.loads(await res.content.readline())

    first = asyncio.run(read_one_line_and_hang_up())
    assert first["done"] is False
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60  # the server notices at its next write
    while not rows and time.monotonic() < deadline:
        rows = api_metrics(server.url, since)["records"]
        time.sleep(0.05)
    assert [(r["endpoint"], r["done_reason"]) for r in rows] == [("generate", "cancel")]
    assert 1 <= rows[0]["eval_count"] < 400 and rows[0]["ttft_s"] > 0


# ---- the app's lifecycle ---------------------------------------------------------------------


def test_observer_added_once_and_removed_on_cleanup(manager):
    from ollama_nb.server.keys import METRICS

    app = build_app(manager)
    recorder = app[METRICS]
    assert manager.observers.count(recorder.record) == 1
    with serve_in_thread(app):
        assert manager.observers.count(recorder.record) == 1
    assert recorder.record not in manager.observers


def test_an_existing_recorder_is_reused_and_left_attached(manager):
    from ollama_nb.server.dashboard import setup_metrics
    from ollama_nb.server.keys import MANAGER, METRICS

    recorder = MetricsRecorder()
    unwatch = recorder.watch(manager)  # e.g. a notebook already recording
    app = web.Application()
    app[MANAGER] = manager
    app[METRICS] = recorder
    setup_metrics(app)
    assert app[METRICS] is recorder and manager.observers.count(recorder.record) == 1

    async def lifecycle() -> None:
        app.freeze()
        await app.startup()
        await app.shutdown()
        await app.cleanup()

    asyncio.run(lifecycle())
    assert manager.observers.count(recorder.record) == 1  # it was not ours to remove
    unwatch()
    assert recorder.record not in manager.observers


def test_stopping_the_server_ends_open_event_streams_cleanly(manager):
    # a long shutdown timeout: were the stream not ended by the shutdown hook, aiohttp would wait
    # for it and then cut the connection, which the client reports as a payload error
    with serve_in_thread(build_app(manager), shutdown_timeout=60) as srv:
        async def go() -> bytes:
            async with aiohttp.ClientSession() as session, session.get(
                    srv.url + "/dashboard/events") as res:
                first = await res.content.readline()
                stopping = asyncio.create_task(asyncio.to_thread(srv.stop))
                rest = await res.content.read()  # raises on a cut connection
                await stopping
                return first + rest

        body = asyncio.run(go())
    assert body.startswith(b"retry: ")


PING = b": ping\n\n"


async def _read_until(res: aiohttp.ClientResponse, marker: bytes) -> bytes:
    """The raw stream up to and including the first ``marker``."""
    seen = b""
    while marker not in seen:
        line = await res.content.readline()
        assert line, f"the stream ended before {marker!r}: {seen!r}"
        seen += line
    return seen


def test_event_stream_wire_format_pings_and_resume(manager, monkeypatch):
    """The exact bytes: ``retry``, then the records above ``since`` (``Last-Event-ID`` wins over
    ``?since=``), ``: ping`` comments every heartbeat, and new records as they finish."""
    from ollama_nb.server import dashboard
    from ollama_nb.server.keys import METRICS

    monkeypatch.setattr(dashboard, "_HEARTBEAT_S", 0.05)
    app = build_app(manager)
    recorder = app[METRICS]
    first = recorder.last_seq
    for i in range(3):
        recorder.record(_record(i))

    def event(seq: int) -> bytes:
        row = json.dumps(row_of(seq, recorder.records(seq - 1)[0]), separators=(",", ":"))
        return f"id: {seq}\nevent: record\ndata: {row}\n\n".encode()

    with serve_in_thread(app) as srv:
        async def go() -> tuple[Any, bytes, bytes, bytes]:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                async with session.get(f"{srv.url}/dashboard/events?since={first + 1}") as res:
                    head = await _read_until(res, event(first + 3))
                    head += await _read_until(res, PING)  # idle now: the heartbeat
                    recorder.record(_record(3))  # any thread may record
                    live = await _read_until(res, event(first + 4))
                async with session.get(f"{srv.url}/dashboard/events?since=0",
                                       headers={"Last-Event-ID": str(first + 3)}) as again:
                    resumed = await _read_until(again, event(first + 4))
                return res.headers, head, live, resumed

        headers, head, live, resumed = asyncio.run(go())
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Cache-Control"] == "no-cache" and headers["X-Accel-Buffering"] == "no"
    assert head.endswith(PING) and b"\r" not in head + live + resumed
    assert head.replace(PING, b"") == b"retry: 2000\n\n" + event(first + 2) + event(first + 3)
    assert live.replace(PING, b"") == event(first + 4)
    assert resumed.replace(PING, b"") == b"retry: 2000\n\n" + event(first + 4)


def test_an_event_stream_the_client_leaves_is_ended(manager, monkeypatch):
    """Without handler cancellation (this runner has none) a failed ping is what ends the
    stream: its subscription to the recorder goes away."""
    from ollama_nb.server import dashboard
    from ollama_nb.server.keys import METRICS

    monkeypatch.setattr(dashboard, "_HEARTBEAT_S", 0.05)
    app = build_app(manager)
    streams = app[dashboard._STREAMS]
    with serve_in_thread(app) as srv:
        async def open_and_leave() -> None:
            async with aiohttp.ClientSession() as session, session.get(srv.url + "/dashboard/events") as res:
                assert await res.content.readline() == b"retry: 2000\n"
                assert len(streams) == 1

        asyncio.run(open_and_leave())
        deadline = time.monotonic() + 20  # generous: a few ping periods suffice
        while streams and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not streams
        app[METRICS].record(_record(0))  # nobody listening: nothing to deliver, nothing raised


# ---- the recorder and the plots without a server ---------------------------------------------


def _record(i: int, model: str = SMOLLM, **fields: Any) -> RequestRecord:
    endpoint, done_reason = fields.pop("endpoint", "chat"), fields.pop("done_reason", "stop")
    timings: dict[str, Any] = {
        "total_duration": 10**9, "load_duration": 10**6, "ttft_duration": 2 * 10**8, "prompt_eval_count": 10,
        "prompt_eval_duration": 10**8, "eval_count": 20, "eval_duration": 4 * 10**8,
    }
    return RequestRecord(endpoint=endpoint, model=model, started_at=time.time() + i,
                         timings=Timings(**{**timings, **fields}), done_reason=done_reason)


def test_ring_buffer_is_bounded_but_counters_keep_counting():
    recorder = MetricsRecorder(maxlen=3)
    seen: list[int] = []
    unsubscribe = recorder.subscribe(lambda seq, r: seen.append(seq))
    for i in range(5):
        recorder.record(_record(i))
    unsubscribe()
    recorder.record(_record(5, endpoint="embed", eval_count=0, eval_duration=0, ttft_duration=None))
    assert seen == [1, 2, 3, 4, 5]
    assert [row["seq"] for row in recorder.rows()] == [4, 5, 6] and recorder.last_seq == 6
    assert [row["seq"] for row in recorder.rows(since=5)] == [6]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(recorder.prometheus_text().decode()) for s in f.samples}
    assert value(samples, "ollama_nb_requests_total", model=SMOLLM, endpoint="chat") == 5
    assert value(samples, "ollama_nb_generated_tokens_total", model=SMOLLM, endpoint="chat") == 100
    assert value(samples, "ollama_nb_tokens_per_second", model=SMOLLM) == 50
    assert value(samples, "ollama_nb_loaded_models") == 0  # no manager watched

    frame = recorder.to_dataframe()
    assert list(frame.columns) == list(COLUMNS) and list(frame["seq"]) == [4, 5, 6]
    assert frame["ttft_s"].isna().tolist() == [False, False, True]
    assert frame.loc[0, "eval_s"] == pytest.approx(0.4) and frame.loc[0, "tokens_per_second"] == 50
    (summary,) = recorder.summary()
    assert summary["requests"] == 3 and summary["generated_tokens"] == 40
    assert summary["mean_tokens_per_second"] == 50 and summary["median_ttft_ms"] == 200


def test_plots_render_with_and_without_data():
    from ollama_nb.observe.plots import figure, render_png

    empty = MetricsRecorder()
    assert list(empty.to_dataframe().columns) == list(COLUMNS)
    full = MetricsRecorder()
    for i in range(6):
        full.record(_record(i, model=("a:1", "b:2")[i % 2], load_duration=10**9 if i < 2 else 0))
    for name in PLOT_NAMES:
        assert render_png(name, empty).startswith(PNG_MAGIC)
        assert render_png(name, full.to_dataframe()).startswith(PNG_MAGIC)
    fig = figure("tokens_per_second", full)
    assert sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts()) == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="unknown plot"):
        figure("nope", full)


def test_plot_figures_display_as_png_in_a_fresh_shell():
    # No %matplotlib inline, no pyplot: IPython's own display formatter must find a PNG.
    from IPython.core.interactiveshell import InteractiveShell

    from ollama_nb.observe.plots import figure

    full = MetricsRecorder()
    for i in range(3):
        full.record(_record(i, model="a:1"))
    data, _ = InteractiveShell.instance().display_formatter.format(figure("ttft", full))
    assert data["image/png"].startswith(PNG_MAGIC)
