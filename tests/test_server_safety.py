"""Safety at the door: CORS (OLLAMA_ORIGINS), the DNS-rebinding Host check, the bearer token,
the body limit, and errors that never leak a traceback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket

import ollama
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
from ollama_nb.server.app import make_app
from ollama_nb.server.lifecycle import serve
from ollama_nb.server.security import OriginPolicy, host_allowed

from .conftest import SMOLLM
from .server_fixtures import FAST, http, live_server  # noqa: F401  (fixture)


@pytest.fixture
def empty_manager(tmp_path):
    manager = ModelManager(Store(tmp_path / "store"))
    yield manager
    manager.close()


@pytest.fixture
def start(tmp_path):
    """Start extra servers, each with its own settings and its own (empty) manager, since
    ``serve`` hands back the running server when the same manager asks again."""
    servers = []

    def _start(host="127.0.0.1", **kwargs):
        server = serve(ModelManager(Store(tmp_path / "store")), host, 0, **kwargs)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()
        server.manager.close()


# ---- CORS ------------------------------------------------------------------------------------


def test_origin_policy_is_ollamas():
    from ollama_nb.base import config

    default = OriginPolicy(config.origins())
    for ok in ("http://localhost", "http://localhost:8888", "https://127.0.0.1:3000", "http://0.0.0.0:1",
               "app://obsidian.md", "file://", "tauri://localhost", "vscode-webview://abc", "vscode-file://x"):
        assert default.allows(ok), ok
    for bad in ("https://evil.example", "http://localhost.evil.example", "http://localhost:1.evil.example",
                "null", "chrome-extension://abc"):
        assert not default.allows(bad), bad
    custom = OriginPolicy(["chrome-extension://*", "https://*.example.org", "http://exact.test"])
    assert custom.allows("chrome-extension://abcdef") and custom.allows("https://a.b.example.org")
    assert custom.allows("http://exact.test") and not custom.allows("http://exact.test:81")
    assert not custom.allows("https://example.org.evil") and not custom.allows("http://a.example.org")
    assert OriginPolicy(["*"]).allows("https://anything.example")


def test_cors_preflight_and_headers(live):
    origin = "http://localhost:8888"  # JupyterLab's page
    pre = http(live.url, "OPTIONS", "/api/chat", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert {"Authorization", "Content-Type"} <= set(pre.headers["Access-Control-Allow-Headers"].split(","))
    streamed = http(live.url, "POST", "/api/generate", {"model": SMOLLM, "prompt": "Hi", "options": FAST},
                    headers={"Origin": origin})
    assert streamed.status == 200 and streamed.headers["Access-Control-Allow-Origin"] == origin
    failed = http(live.url, "POST", "/api/show", {"model": "nosuch"}, headers={"Origin": origin})
    assert failed.status == 404 and failed.headers["Access-Control-Allow-Origin"] == origin
    evil = http(live.url, "GET", "/api/tags", headers={"Origin": "https://evil.example"})
    assert evil.status == 403 and "Access-Control-Allow-Origin" not in evil.headers
    evil_pre = http(live.url, "OPTIONS", "/api/chat", headers={"Origin": "https://evil.example",
                                                               "Access-Control-Request-Method": "POST"})
    assert evil_pre.status == 403
    same = http(live.url, "GET", "/api/tags", headers={"Origin": live.url})  # same origin: not CORS
    assert same.status == 200


def test_ollama_origins_extends_the_list(start, monkeypatch):
    monkeypatch.setenv("OLLAMA_ORIGINS", "https://*.example.org, chrome-extension://*")
    server = start()
    ok = http(server.url, "GET", "/api/tags", headers={"Origin": "https://nb.example.org"})
    assert ok.status == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://nb.example.org"
    assert http(server.url, "GET", "/api/tags", headers={"Origin": "chrome-extension://x"}).status == 200
    assert http(server.url, "GET", "/api/tags", headers={"Origin": "http://localhost:9"}).status == 200
    assert http(server.url, "GET", "/api/tags", headers={"Origin": "https://evil.example"}).status == 403
    monkeypatch.setenv("OLLAMA_ORIGINS", "*")
    anyone = start()
    reply = http(anyone.url, "GET", "/api/tags", headers={"Origin": "https://evil.example"})
    assert reply.status == 200 and reply.headers["Access-Control-Allow-Origin"] == "*"


# ---- Host check (DNS rebinding) --------------------------------------------------------------


def test_host_rule_table():
    for ok in ("localhost", "localhost:11434", "LOCALHOST", "api.localhost", "box.local", "svc.internal",
               "127.0.0.1:80", "[::1]:11434", "10.1.2.3", "172.16.0.1", "192.168.1.7:8080", "0.0.0.0",
               "[fd00::1]:80", socket.gethostname(), ""):
        assert host_allowed(ok), ok
    for bad in ("evil.example", "evil.example:11434", "8.8.8.8", "[2001:db8::1]:80", "localhost.evil.example",
                "172.32.0.1", "local", "[fd00::1]"):  # Go cannot split a bracketed host without a port
        assert not host_allowed(bad), bad
    assert host_allowed("hub.example.org", ["hub.example.org"]) and host_allowed("x.y", ["*"])


def test_loopback_server_refuses_foreign_host_headers(live):
    rebinding = http(live.url, "GET", "/api/tags", headers={"Host": "attacker.example:11434"})
    assert rebinding.status == 403 and "attacker.example" in rebinding.json()["error"]
    assert http(live.url, "GET", "/api/tags", headers={"Host": "8.8.8.8"}).status == 403
    for ok in ("localhost:11434", "notebook.localhost", "192.168.0.10"):
        assert http(live.url, "GET", "/api/tags", headers={"Host": ok}).status == 200, ok
    assert http(live.url, "OPTIONS", "/api/tags", headers={"Host": "localhost"}).status == 204


def test_allowed_hosts_env_and_non_loopback_binds(start, monkeypatch):
    monkeypatch.setenv("OLLAMA_NB_ALLOWED_HOSTS", "hub.example.org")
    proxied = start()
    assert http(proxied.url, "GET", "/api/tags", headers={"Host": "hub.example.org"}).status == 200
    assert http(proxied.url, "GET", "/api/tags", headers={"Host": "other.example.org"}).status == 403
    monkeypatch.delenv("OLLAMA_NB_ALLOWED_HOSTS")
    exposed = start("0.0.0.0")  # bound beyond loopback: Ollama skips the check
    assert exposed.url.startswith("http://127.0.0.1:")
    assert http(exposed.url, "GET", "/api/tags", headers={"Host": "anything.example"}).status == 200


# ---- bearer token ----------------------------------------------------------------------------


def test_bearer_token(start, monkeypatch):
    server = start(api_key="s3cret")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        refused = http(server.url, "GET", "/api/tags", headers=headers)
        assert (refused.status, refused.json()) == (401, {"error": "unauthorized"})
    assert http(server.url, "GET", "/api/tags", headers={"Authorization": "Bearer s3cret"}).status == 200
    assert http(server.url, "GET", "/api/tags", headers={"Authorization": "bearer s3cret"}).status == 200
    preflight = http(server.url, "OPTIONS", "/api/tags", headers={
        "Origin": "http://localhost:8888", "Access-Control-Request-Method": "GET"})
    assert preflight.status == 204  # browsers never send credentials on a preflight
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=server.url).list()
    assert err.value.status_code == 401
    assert ollama.Client(host=server.url, headers={"Authorization": "Bearer s3cret"}).list().models == []
    monkeypatch.setenv("OLLAMA_NB_API_KEY", "from-env")
    from_env = start()
    assert http(from_env.url, "GET", "/api/version").status == 401
    monkeypatch.setenv("OLLAMA_API_KEY", "from-env")  # what ollama-python sends by itself
    assert ollama.Client(host=from_env.url).list().models == []


# ---- body limit and unexpected errors (app level) ---------------------------------------------


async def _with_app(app, scenario):
    async with TestServer(app) as server, ClientSession() as session:
        return await scenario(session, str(server.make_url("")).rstrip("/"))


def test_body_limit_is_413_json_and_blobs_are_exempt(empty_manager):
    app = make_app(empty_manager, max_body=1024)
    blob = b"x" * 4096
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    async def scenario(session, base):
        big = await session.post(base + "/api/generate", data=b'{"model": "' + b"m" * 2000 + b'"}')

        async def chunks():  # no Content-Length: the limit applies while reading
            for _ in range(4):
                yield b" " * 1000

        chunked = await session.post(base + "/api/generate", data=chunks())
        upload = await session.post(f"{base}/api/blobs/{digest}", data=blob)
        small = await session.post(base + "/api/show", json={})
        return ((big.status, await big.json()), (chunked.status, await chunked.json()),
                upload.status, small.status)

    big, chunked, upload, small = asyncio.run(_with_app(app, scenario))
    assert big == (413, {"error": "http: request body too large"})
    assert chunked == (413, {"error": "http: request body too large"})
    assert upload == 201 and empty_manager.store.has_blob(digest)
    assert small == 400  # under the limit, handled normally ("model is required")


def test_a_bug_is_a_one_line_500_and_a_logged_traceback(caplog, tmp_path):
    class BrokenManager(ModelManager):
        def list(self):
            raise RuntimeError("disk\nexploded")

    async def scenario(session, base):
        reply = await session.get(base + "/api/tags")
        return reply.status, await reply.json(), await (await session.get(base + "/")).text()

    with caplog.at_level(logging.ERROR, logger="ollama_nb.server"):
        status, body, root = asyncio.run(_with_app(make_app(BrokenManager(Store(tmp_path))), scenario))
    assert (status, body) == (500, {"error": "disk exploded"})
    assert root == "Ollama is running"  # the server keeps serving
    assert any(r.exc_info and "disk" in str(r.exc_info[1]) for r in caplog.records)


def test_every_route_module_is_installed(empty_manager):
    app = make_app(empty_manager)
    paths = {r.resource.canonical for r in app.router.routes()}
    assert {"/api/chat", "/v1/chat/completions", "/v1/messages", "/v1/responses", "/metrics", "/dashboard"} <= paths


# ---- /v1: refusals at the door in OpenAI's error shape ----------------------------------------


def _openai_error(reply, status, message, kind="api_error"):
    assert reply.status == status, (reply.status, reply.body)
    assert reply.json() == {"error": {"message": message, "type": kind, "param": None, "code": None}}


def test_door_refusals_on_v1_paths_use_openais_error_shape(start):
    import openai

    server = start(api_key="s3cret")
    bearer = {"Authorization": "Bearer s3cret"}
    _openai_error(http(server.url, "GET", "/v1/models"), 401, "unauthorized")
    _openai_error(http(server.url, "GET", "/v1/models", headers={**bearer, "Host": "attacker.example"}), 403,
                  "host 'attacker.example' is not allowed on a server bound to loopback; "
                  "add it to OLLAMA_NB_ALLOWED_HOSTS")
    evil = http(server.url, "GET", "/v1/models", headers={**bearer, "Origin": "https://evil.example"})
    assert evil.status == 403 and evil.json()["error"]["type"] == "api_error"
    assert "evil.example" in evil.json()["error"]["message"]
    _openai_error(http(server.url, "POST", "/v1/nope", {}, headers=bearer), 404, "404 page not found",
                  "not_found_error")
    wrong_method = http(server.url, "GET", "/v1/chat/completions", headers=bearer)
    _openai_error(wrong_method, 405, "405 method not allowed")
    assert "POST" in wrong_method.headers["Allow"]
    # the native paths keep Ollama's shapes
    assert http(server.url, "GET", "/api/tags").json() == {"error": "unauthorized"}
    assert http(server.url, "GET", "/api/nope", headers=bearer).body == b"404 page not found"
    # and the openai package reads the refusal as what it is
    with pytest.raises(openai.AuthenticationError) as err:
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert err.value.status_code == 401 and err.value.body["message"] == "unauthorized"
    assert openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret").models.list().data == []


def test_v1_body_limit_and_bugs_use_openais_error_shape(empty_manager, caplog):
    app = make_app(empty_manager, max_body=1024)

    async def boom(request):
        raise RuntimeError("kaput\nhere")

    app.router.add_get("/v1/boom", boom)

    async def scenario(session, base):
        big = await session.post(base + "/v1/chat/completions", data=b'{"model": "' + b"m" * 2000 + b'"}')

        async def chunks():  # no Content-Length: the handler's own read hits the limit
            for _ in range(4):
                yield b" " * 1000

        chunked = await session.post(base + "/v1/completions", data=chunks())
        bug = await session.get(base + "/v1/boom")
        return [(r.status, await r.json()) for r in (big, chunked, bug)]

    with caplog.at_level(logging.ERROR, logger="ollama_nb.server"):
        big, chunked, bug = asyncio.run(_with_app(app, scenario))
    too_large = {"error": {"message": "http: request body too large", "type": "api_error", "param": None,
                           "code": None}}
    assert big == (413, too_large) and chunked == (413, too_large)
    assert bug == (500, {"error": {"message": "kaput here", "type": "api_error", "param": None, "code": None}})
    assert any(r.exc_info and "kaput" in str(r.exc_info[1]) for r in caplog.records)


def test_allowed_hosts_accept_urls_and_jupyterhubs_public_name(start, monkeypatch):
    from ollama_nb.base import config

    monkeypatch.setenv("OLLAMA_NB_ALLOWED_HOSTS", "https://Hub.Example.org:8443/user/me/, lab.example.net:80")
    monkeypatch.setenv("JUPYTERHUB_PUBLIC_URL", "https://me.hub.example.com/user/me/")
    assert config.allowed_hosts() == ["hub.example.org", "lab.example.net", "me.hub.example.com"]
    server = start()
    # what jupyter-server-proxy forwards: the Host the browser sent to the hub
    for host in ("hub.example.org", "lab.example.net:8888", "me.hub.example.com"):
        assert http(server.url, "GET", "/api/tags", headers={"Host": host}).status == 200, host
    assert http(server.url, "GET", "/api/tags", headers={"Host": "hub.example.org.evil.example"}).status == 403


def test_door_refusals_on_v1_messages_use_anthropics_shape_and_its_key_header_is_read(start):
    import anthropic

    server = start(api_key="s3cret")
    refused = http(server.url, "POST", "/v1/messages", {"model": "m", "max_tokens": 1, "messages": []})
    assert refused.status == 401
    body = refused.json()
    assert body["type"] == "error" and body["error"] == {"type": "authentication_error", "message": "unauthorized"}
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0).messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.NotFoundError):  # the key got it through the door: the model is unknown
        anthropic.Anthropic(base_url=server.url, api_key="s3cret", max_retries=0).messages.create(
            model="no-such-model", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
