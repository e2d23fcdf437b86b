"""A local registry on 127.0.0.1 that speaks the Ollama ``/v2`` protocol and enough of the
Hugging Face Hub API for huggingface_hub, with a switch for every way a real one misbehaves.

It serves real manifests and real blobs (the bundled GGUF files are read in place from the
session's shared store, never copied), supports Range requests, can redirect blob GETs to a
"CDN" route on another host name (``localhost`` instead of ``127.0.0.1``, as the real registry
redirects to its CDN) and counts what it sent, so tests can assert resumption and
download-once without timing anything.

It runs its own asyncio loop in a daemon thread, so it works the same for in-process pulls
(whose downloads run on ollama_nb's own background loop) and for CLI subprocesses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_TYPE = "application/vnd.ollama.image.model"
PARAMS_TYPE = "application/vnd.ollama.image.params"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_CHUNK = 256 * 1024


class Blob:
    """Blob bytes held in memory (small, synthetic) or read from a file (a real GGUF)."""

    def __init__(self, *, data: bytes | None = None, path: Path | None = None,
                 digest: str | None = None) -> None:
        self.data = data
        self.path = path
        if data is not None:
            self.size = len(data)
            self.digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        else:
            assert path is not None and digest is not None
            self.size = path.stat().st_size
            self.digest = digest

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls(data=data)

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + n]
        with open(self.path, "rb") as f:  # type: ignore[arg-type]
            f.seek(offset)
            return f.read(n)

    def layer(self, media_type: str) -> dict:
        return {"mediaType": media_type, "digest": self.digest, "size": self.size}


@dataclass
class Faults:
    """Every switch is off by default; tests turn on what they need."""

    corrupt: set[str] = field(default_factory=set)  # flip one byte in the middle of the blob
    truncate_once: dict[str, float] = field(default_factory=dict)  # first GET: send this fraction, drop
    reset: set[str] = field(default_factory=set)  # every GET: drop the connection before the body
    stall: dict[str, int] = field(default_factory=dict)  # send this many bytes, then go silent
    fail_status: dict[str, list[int]] = field(default_factory=dict)  # next GETs answer these
    lie_size: set[str] = field(default_factory=set)  # claim 1000 more bytes than the blob has
    short_length: set[str] = field(default_factory=set)  # Content-Length half of the range
    redirect_loop: bool = False  # blob GET redirects to itself forever
    redirect_to: str | None = None  # blob GET redirects here (e.g. file:///etc/passwd)
    cdn: bool = False  # blob GET redirects to http://localhost:PORT/cdn/<digest>
    no_ranges: bool = False  # ignore Range headers (200 + whole blob)
    throttle: float | None = None  # bytes per second per response
    hold: threading.Event | None = None  # blob bodies wait until this is set
    barrier: int = 0  # blob bodies wait (up to 5 s) until this many are in flight
    manifest_status: int | None = None
    manifest_body: bytes | None = None  # served instead of the real manifest
    manifest_padding: int = 0  # serve the manifest with this many spaces appended
    hf_cdn: bool = True  # HF resolve of an LFS file redirects to the CDN route (as the Hub does)
    push_token: str | None = None  # pushes (and HEADs) need "Authorization: Bearer <token>"
    drop_patches: int = 0  # this many PATCHes (the next ones) take half the part, then drop
    upload_elsewhere: str | None = None  # POST uploads/ answers with a Location on this host


@dataclass
class HFRepo:
    sha: str
    files: dict[str, Blob | bytes]
    token: str | None = None  # requires "Authorization: Bearer <token>" ...
    gated: bool = False  # ... only to download files (listing is public), as a gated repo does


@dataclass
class Seen:
    method: str
    path: str
    host: str
    range: str | None
    authorization: str | None
    accept: str | None


class RegistryFixture:
    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str, str], bytes] = {}
        self.blobs: dict[str, Blob] = {}
        self.hf: dict[str, HFRepo] = {}
        self.faults = Faults()
        self.sent: Counter[str] = Counter()  # body bytes sent, per digest
        self.requests: list[Seen] = []
        self.inflight = 0
        self.max_inflight = 0
        self._truncated: set[str] = set()
        self._uploads: dict[str, bytearray] = {}  # open upload sessions, by id
        self.repo_blobs: dict[tuple[str, str], set[str]] = {}  # what HEAD finds, per repository
        self._stopping = False
        self.port = 0

    # -- content -------------------------------------------------------------------------------

    def add_blob(self, blob: Blob) -> Blob:
        self.blobs[blob.digest] = blob
        return blob

    def add_model(self, name: str, layers: list[tuple[str, Blob]], config: Blob,
                  tag: str = "latest") -> bytes:
        """Serve ``namespace/model:tag`` with these layers; returns the manifest bytes."""
        ns, model = name.split("/")
        for _media, blob in layers:
            self.add_blob(blob)
        self.add_blob(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.layer(CONFIG_TYPE),
            "layers": [blob.layer(media) for media, blob in layers],
        }
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        self.manifests[(ns, model, tag)] = raw
        self.repo_blobs.setdefault((ns, model), set()).update(b.digest for _m, b in [*layers, ("", config)])
        return raw

    def add_raw_manifest(self, name: str, raw: bytes, blobs: list[Blob], tag: str = "latest") -> None:
        ns, model = name.split("/")
        for blob in blobs:
            self.add_blob(blob)
        self.manifests[(ns, model, tag)] = raw
        self.repo_blobs.setdefault((ns, model), set()).update(b.digest for b in blobs)

    def add_store_model(self, store_root: Path, source: str, name: str, tag: str = "latest") -> bytes:
        """Serve a model of a local store (e.g. the bundled smollm2) under a new name; the blob
        files are read in place."""
        from ollama_nb.models.store import Store

        store = Store(store_root)
        manifest = store.read_manifest(source)
        blobs = [Blob(path=store.blob_path(layer.digest), digest=layer.digest)
                 for layer in manifest.all_layers()]
        raw = manifest.to_bytes()
        self.add_raw_manifest(name, raw, blobs, tag)
        return raw

    def add_hf_repo(self, repo_id: str, files: dict[str, Blob | bytes], *, token: str | None = None,
                    gated: bool = False,
                    sha: str = "0123456789abcdef0123456789abcdef01234567") -> HFRepo:
        repo = HFRepo(sha=sha, files=files, token=token, gated=gated)
        self.hf[repo_id] = repo
        for f in files.values():
            if isinstance(f, Blob):
                self.add_blob(f)
        return repo

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryFixture:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="registry-fixture",
                                        daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 30)  # pushes PATCH parts of up to 64 MiB
        r = app.router
        r.add_get("/v2/{ns}/{model}/manifests/{tag}", self._manifest)
        r.add_put("/v2/{ns}/{model}/manifests/{tag}", self._put_manifest)
        r.add_post("/v2/{ns}/{model}/blobs/uploads/", self._start_upload)
        r.add_patch("/v2/{ns}/{model}/blobs/uploads/{id}", self._patch_upload)
        r.add_put("/v2/{ns}/{model}/blobs/uploads/{id}", self._finish_upload)
        r.add_route("*", "/v2/{ns}/{model}/blobs/{digest}", self._registry_blob)
        r.add_route("*", "/cdn/{digest}", self._cdn_blob)
        r.add_get("/api/models/{ns}/{repo}", self._hf_info)
        r.add_get("/api/models/{ns}/{repo}/revision/{rev}", self._hf_info)
        r.add_route("*", "/{ns}/{repo}/resolve/{rev}/{path:.+}", self._hf_resolve)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        self._stopping = True
        if self.faults.hold is not None:
            self.faults.hold.set()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def reset_counters(self) -> None:
        self.sent.clear()
        self.requests.clear()
        self.max_inflight = 0

    def blob_requests(self, digest: str) -> list[Seen]:
        return [s for s in self.requests if s.path.endswith(digest) and s.method == "GET"]

    # -- handlers ------------------------------------------------------------------------------

    def _seen(self, request: web.Request) -> None:
        self.requests.append(Seen(request.method, request.path, request.host,
                                  request.headers.get("Range"),
                                  request.headers.get("Authorization"),
                                  request.headers.get("Accept")))

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        f = self.faults
        if f.manifest_status is not None:
            return web.json_response(
                {"errors": [{"code": "UNAVAILABLE", "message": "registry is having a bad day"}]},
                status=f.manifest_status)
        key = (request.match_info["ns"], request.match_info["model"], request.match_info["tag"])
        raw = f.manifest_body if f.manifest_body is not None else self.manifests.get(key)
        if raw is None:
            return web.json_response(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}, status=404)
        if f.manifest_padding:
            resp = web.StreamResponse(headers={"Content-Type": MANIFEST_TYPE})
            await resp.prepare(request)  # chunked: no Content-Length to refuse it by
            await resp.write(raw)
            left = f.manifest_padding
            while left > 0 and not self._stopping:
                await resp.write(b" " * min(left, 1 << 20))
                left -= 1 << 20
            await resp.write_eof()
            return resp
        return web.Response(body=raw, headers={"Content-Type": MANIFEST_TYPE})

    # -- pushes: the Docker registry v2 upload protocol -------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        token = self.faults.push_token
        if token is None or request.headers.get("Authorization") == f"Bearer {token}":
            return None
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}, status=401,
            headers={"WWW-Authenticate": f'Bearer realm="{self.url}/token",service="fixture"'})

    def uploads_in_progress(self) -> int:
        return len(self._uploads)

    async def _start_upload(self, request: web.Request) -> web.Response:
        self._seen(request)
        if (refused := self._refused(request)) is not None:
            return refused
        upload = os.urandom(8).hex()
        self._uploads[upload] = bytearray()
        where = f"/v2/{request.match_info['ns']}/{request.match_info['model']}/blobs/uploads/{upload}"
        if self.faults.upload_elsewhere:
            where = f"http://{self.faults.upload_elsewhere}{where}"
        return web.Response(status=202, headers={"Location": where, "Docker-Upload-UUID": upload,
                                                  "Range": "0-0"})

    async def _patch_upload(self, request: web.Request) -> web.Response:
        self._seen(request)
        if (refused := self._refused(request)) is not None:
            return refused
        data = self._uploads.get(request.match_info["id"])
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]}, status=404)
        first, _, _last = request.headers.get("Content-Range", "").partition("-")
        if not first.isdigit() or int(first) != len(data):
            return web.Response(status=416, headers={"Range": f"0-{len(data) - 1}"})
        body = await request.read()
        if self.faults.drop_patches > 0:
            self.faults.drop_patches -= 1
            data += body[: len(body) // 2]  # half arrived, then the line went down
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=202)
        data += body
        return web.Response(status=202, headers={"Location": str(request.rel_url), "Range": f"0-{len(data) - 1}",
                                                  "Docker-Upload-UUID": request.match_info["id"]})

    async def _finish_upload(self, request: web.Request) -> web.Response:
        self._seen(request)
        if (refused := self._refused(request)) is not None:
            return refused
        data = self._uploads.pop(request.match_info["id"], None)
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]}, status=404)
        data += await request.read()
        digest = request.query.get("digest", "")
        if digest != "sha256:" + hashlib.sha256(data).hexdigest():
            return web.json_response({"errors": [{"code": "DIGEST_INVALID", "message": "digest did not match"}]},
                                     status=400)
        self.add_blob(Blob(data=bytes(data), digest=digest))
        self.repo_blobs.setdefault((request.match_info["ns"], request.match_info["model"]), set()).add(digest)
        return web.Response(status=201, headers={"Docker-Content-Digest": digest, "Location":
                                                  f"/v2/{request.match_info['ns']}/{request.match_info['model']}"
                                                  f"/blobs/{digest}"})

    async def _put_manifest(self, request: web.Request) -> web.Response:
        self._seen(request)
        if (refused := self._refused(request)) is not None:
            return refused
        raw = await request.read()
        try:
            manifest = json.loads(raw)
            digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"errors": [{"code": "MANIFEST_INVALID"}]}, status=400)
        unknown = [d for d in digests if d not in self.blobs]
        if unknown:
            return web.json_response({"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": unknown[0]}]},
                                     status=400)
        key = (request.match_info["ns"], request.match_info["model"], request.match_info["tag"])
        self.manifests[key] = raw
        return web.Response(status=201, headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(raw).hexdigest()})

    async def _registry_blob(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        digest = request.match_info["digest"]
        if request.method == "HEAD":  # a push asking what this repository already holds
            if (refused := self._refused(request)) is not None:
                return refused
            repo = (request.match_info["ns"], request.match_info["model"])
            if digest not in self.repo_blobs.get(repo, set()):
                return web.Response(status=404)
        blob = self.blobs.get(digest)
        f = self.faults
        if f.redirect_loop:
            raise web.HTTPTemporaryRedirect(location=str(request.rel_url))
        if f.redirect_to:
            raise web.HTTPTemporaryRedirect(location=f.redirect_to)
        if blob is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if f.cdn:
            raise web.HTTPTemporaryRedirect(location=f"http://localhost:{self.port}/cdn/{digest}")
        return await self._serve(request, blob)

    async def _cdn_blob(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        blob = self.blobs.get(request.match_info["digest"])
        if blob is None:
            return web.Response(status=404)
        return await self._serve(request, blob)

    async def _serve(self, request: web.Request, blob: Blob,
                     headers: dict[str, str] | None = None) -> web.StreamResponse:
        f, d, total = self.faults, blob.digest, blob.size
        statuses = f.fail_status.get(d)
        if statuses and request.method == "GET":
            return web.Response(status=statuses.pop(0), text="try again later")
        start, end, ranged = 0, total - 1, False
        m = _RANGE.fullmatch(request.headers.get("Range", ""))
        if m and not f.no_ranges:
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total or start > end:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
            ranged = True
        n = end - start + 1
        claimed = total + 1000 if d in f.lie_size else total
        resp = web.StreamResponse(status=206 if ranged else 200, headers=headers or {})
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Content-Type"] = "application/octet-stream"
        if ranged:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{claimed}"
        length = n if ranged else claimed
        if d in f.short_length:
            length = n // 2
        resp.content_length = length
        if request.method == "HEAD":
            await resp.prepare(request)
            return resp
        await resp.prepare(request)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            waited = 0.0
            while self.max_inflight < f.barrier and waited < 5 and not self._stopping:
                await asyncio.sleep(0.01)  # a latch: open for good once `barrier` overlapped
                waited += 0.01
            while f.hold is not None and not f.hold.is_set() and not self._stopping:
                if request.transport is None or request.transport.is_closing():
                    return resp  # the client gave up
                await asyncio.sleep(0.01)
            limit = min(n, length)
            drop = False
            if d in f.truncate_once and d not in self._truncated:
                self._truncated.add(d)
                limit, drop = int(n * f.truncate_once[d]), True
            elif d in f.reset:
                limit, drop = 0, True
            stall_at = f.stall.get(d)
            chunk_size = 64 * 1024 if f.throttle else _CHUNK
            sent, pos = 0, start
            while sent < limit:
                if stall_at is not None and sent >= stall_at:
                    while not self._stopping and request.transport is not None \
                            and not request.transport.is_closing():
                        await asyncio.sleep(0.02)
                    return resp
                k = min(chunk_size, limit - sent)
                if stall_at is not None:
                    k = min(k, max(stall_at - sent, 1))
                chunk = blob.read(pos, k)
                if d in f.corrupt and pos <= total // 2 < pos + len(chunk):
                    i = total // 2 - pos
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                if request.transport is None or request.transport.is_closing():
                    return resp
                await resp.write(chunk)
                self.sent[d] += len(chunk)
                sent += len(chunk)
                pos += len(chunk)
                if f.throttle:
                    await asyncio.sleep(len(chunk) / f.throttle)
            if drop:
                if request.transport is not None:
                    request.transport.close()
                return resp
        finally:
            self.inflight -= 1
        await resp.write_eof()
        return resp

    # -- Hugging Face --------------------------------------------------------------------------

    def _hf_repo(self, request: web.Request, *, download: bool = False
                 ) -> tuple[str, HFRepo | None, web.Response | None]:
        repo_id = f"{request.match_info['ns']}/{request.match_info['repo']}"
        repo = self.hf.get(repo_id)
        if repo is None:
            return repo_id, None, web.json_response(
                {"error": "Repository not found"}, status=404, headers={"X-Error-Code": "RepoNotFound"})
        needs_token = repo.token is not None and (download or not repo.gated)
        if needs_token and request.headers.get("Authorization") != f"Bearer {repo.token}":
            headers = {"X-Error-Code": "GatedRepo"} if repo.gated else {}
            return repo_id, None, web.json_response(
                {"error": "Access to this model is restricted."}, status=401, headers=headers)
        return repo_id, repo, None

    async def _hf_info(self, request: web.Request) -> web.Response:
        self._seen(request)
        repo_id, repo, error = self._hf_repo(request)
        if error is not None:
            return error
        assert repo is not None
        siblings = []
        for name, f in sorted(repo.files.items()):
            entry: dict = {"rfilename": name}
            if request.query.get("blobs"):
                if isinstance(f, Blob):
                    entry.update(size=f.size, blobId="b" * 40,
                                 lfs={"sha256": f.digest[7:], "size": f.size, "pointerSize": 134})
                else:
                    entry.update(size=len(f), blobId=hashlib.sha1(f).hexdigest())
            siblings.append(entry)
        return web.json_response({
            "_id": "x" * 24, "id": repo_id, "modelId": repo_id, "sha": repo.sha,
            "private": repo.token is not None and not repo.gated, "gated": repo.gated and "auto", "disabled": False,
            "tags": ["gguf"], "siblings": siblings,
            "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
        })

    async def _hf_resolve(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        _repo_id, repo, error = self._hf_repo(request, download=True)
        if error is not None:
            return error
        assert repo is not None
        if request.match_info["rev"] not in (repo.sha, "main"):
            return web.Response(status=404, headers={"X-Error-Code": "RevisionNotFound"})
        f = repo.files.get(request.match_info["path"])
        if f is None:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        headers = {"X-Repo-Commit": repo.sha}
        if isinstance(f, bytes):
            headers["ETag"] = f'"{hashlib.sha1(f).hexdigest()}"'
            return web.Response(body=f if request.method == "GET" else None, headers=headers)
        headers["ETag"] = f'"{f.digest[7:]}"'
        if self.faults.hf_cdn:
            headers["X-Linked-Etag"] = headers["ETag"]
            headers["X-Linked-Size"] = str(f.size)
            headers["Location"] = f"http://localhost:{self.port}/cdn/{f.digest}"
            return web.Response(status=302, headers=headers)
        return await self._serve(request, f, headers)


def synthetic_model(fixture: RegistryFixture, name: str, size: int, *, seed: int = 1) -> tuple[bytes, Blob]:
    """A model of random bytes (registry pulls never parse the GGUF): one ``size``-byte model
    layer, a params layer and a config; returns (manifest bytes, model blob)."""
    import random

    rnd = random.Random(seed)
    model = Blob.of(rnd.randbytes(size))
    params = Blob.of(b'{"stop":["<|end|>"]}')
    config = Blob.of(json.dumps({"model_format": "gguf", "model_family": "llama",
                                 "model_families": ["llama"], "model_type": "1M",
                                 "file_type": "Q4_0", "architecture": "amd64",
                                 "os": "linux", "seed": seed}).encode() + b"\n")
    raw = fixture.add_model(name, [(MODEL_TYPE, model), (PARAMS_TYPE, params)], config)
    return raw, model


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true (a condition, not a duration: tests assert no timings)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a subprocess: no proxies (they would capture 127.0.0.1)."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(extra or {})
    return env
