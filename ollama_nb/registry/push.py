"""Push to a registry that speaks the Docker registry v2 upload protocol (a ``registry:2``, a
Harbor, a Zot, or anything that serves ``/v2``), with the progress statuses ``ollama push``
streams (``server/images.go: PushModel``, ``server/upload.go``)::

    retrieving manifest
    pushing <12 hex>          (digest, total, completed; one series per layer, then the config)
    pushing manifest
    success

Each blob is asked for first (``HEAD``) and skipped when the registry has it. A missing one
gets an upload session (``POST .../blobs/uploads/``), its bytes in ``PATCH`` parts with a
``Content-Range``, and a closing ``PUT ...?digest=`` that the registry checks against the bytes.
The manifest goes last, as the raw bytes of the store's file, so pulling the model back gives
the same manifest byte for byte. An interrupted push therefore leaves no manifest behind, and
the next push skips the blobs that did arrive and uploads the rest from a fresh session.

Requests only ever go to the host named in the model name: an upload location or redirect that
points at another host is refused, and nothing is sent to the Ollama library, which needs a
key signed by the user's ollama.com account.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import BinaryIO

import aiohttp
from yarl import URL

from ..api.types import ProgressResponse
from ..base.errors import ModelNotFound, RegistryError, RegistryUnauthorized, RegistryUnreachable
from ..base.refs import DEFAULT_HOST, ModelRef
from ..models.manifest import MEDIA_TYPE_MANIFEST, Layer
from ..models.store import Store
from . import net
from .aio import Emit, run_with_progress
from .ollama import error_detail, registry_base
from .settings import CREDENTIALS_HINT, PullSettings, registry_auth_headers

__all__ = ["push_registry"]

#: Bytes per PATCH. A part is also what a retry sends again, so it stays well below a model.
PART_SIZE = 64 * 1024 * 1024
_READ = 1 << 20
_LIBRARY_HOSTS = frozenset({DEFAULT_HOST, "ollama.com", "www.ollama.com"})


def push_registry(store: Store, ref: ModelRef, *, insecure: bool = False,
                  settings: PullSettings | None = None) -> Iterator[ProgressResponse]:
    """Progress events of a push. What can be refused without the network (an unknown model,
    the Ollama library, plain http without ``insecure``) is raised before the first event, so a
    server answers it with its status code."""
    if ref.host.lower() in _LIBRARY_HOSTS:
        raise RegistryUnauthorized(
            f"push model: pushing to {ref.host} needs your ollama.com key, which ollama_nb never uses",
            hint=f"push to your own registry by naming it (`ollama-nb cp {ref.display} myregistry:5000/"
                 f"{ref.namespace}/{ref.model}:{ref.tag}`, then push that), or push this store with `ollama push`")
    base = registry_base(ref, insecure=insecure)
    try:
        raw = store.manifest_path(ref).read_bytes()
        manifest = store.read_manifest(ref)
    except (OSError, ModelNotFound):
        raise ModelNotFound(ref.display) from None
    missing = [layer.digest for layer in manifest.all_layers() if not store.has_blob(layer.digest)]
    if missing:
        raise RegistryError(f"push model: blob {missing[0]} of {ref.display} is missing from the store",
                            hint=f"pull or create {ref.display} again")
    settings = settings or PullSettings.from_env()
    yield ProgressResponse(status="retrieving manifest")
    yield from run_with_progress(
        lambda emit: _push(store, ref, base, raw, list(manifest.all_layers()), emit, settings))


async def _push(store: Store, ref: ModelRef, base: URL, raw: bytes, layers: list[Layer], emit: Emit,
                settings: PullSettings) -> None:
    repo = base / "v2" / ref.namespace / ref.model
    auth = registry_auth_headers()
    async with net.new_session(settings) as session:
        upload = _Uploader(session, base, auth, settings)
        for layer in layers:
            await upload.blob(repo, layer, store.blob_path(layer.digest), emit)
        emit(ProgressResponse(status="pushing manifest"))
        await upload.send("PUT", repo / "manifests" / ref.tag, data=raw, ok=(200, 201),
                          headers={"Content-Type": MEDIA_TYPE_MANIFEST}, what="push manifest")
    emit(ProgressResponse(status="success"))


class _Uploader:
    """The requests of one push, all to ``base``'s host, with the user's credentials."""

    def __init__(self, session: aiohttp.ClientSession, base: URL, auth: dict[str, str],
                 settings: PullSettings) -> None:
        self.session, self.base, self.auth, self.settings = session, base, auth, settings

    def _here(self, location: str, current: URL) -> URL:
        """An upload location resolved against ``current``, refused when it leaves the host."""
        if not location:
            raise RegistryError("push model: the registry gave no upload location")
        target = current.join(URL(location))
        if (target.scheme, target.host, target.port) != (self.base.scheme, self.base.host, self.base.port):
            raise RegistryError(
                f"push model: the registry asked to upload to {target.host}, not {self.base.host}",
                hint="ollama_nb only sends to the host named in the model name")
        return target

    async def send(self, method: str, url: URL, *, what: str, ok: tuple[int, ...],
                   data: bytes | AsyncIterator[bytes] | None = None,
                   headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """One request, its status checked; the response is released and returned (headers
        stay readable). 5xx and dropped connections are retried for bodies that can be re-sent."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.session.request(method, url, data=data, allow_redirects=False,
                                                headers={**self.auth, **(headers or {})}) as resp:
                    if resp.status in ok:
                        return resp
                    retry = resp.status in net.TRANSIENT_STATUSES and not isinstance(data, AsyncIterator)
                    if retry and attempt < self.settings.max_retries:
                        await asyncio.sleep(self.settings.backoff(attempt))
                        continue
                    raise await self._refusal(resp, what)
            except aiohttp.ClientConnectorError as exc:
                raise RegistryUnreachable(f"{what}: {net.describe_network_error(method, url, exc)}") from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if not isinstance(data, AsyncIterator) and net.is_transient(exc) \
                        and attempt < self.settings.max_retries:
                    await asyncio.sleep(self.settings.backoff(attempt))
                    continue
                raise RegistryError(f"{what}: {net.describe_network_error(method, url, exc)}") from None

    async def _refusal(self, resp: aiohttp.ClientResponse, what: str) -> RegistryError:
        detail = await error_detail(resp)
        if resp.status in (401, 403):
            sent = "the credentials sent were refused" if self.auth else "no credentials were sent"
            return RegistryUnauthorized(f"{what}: {resp.status}: {detail or 'unauthorized'}",
                                        hint=f"{sent}; {CREDENTIALS_HINT}")
        return RegistryError(f"{what}: {resp.status}: {detail or resp.reason or 'error'}")

    async def blob(self, repo: URL, layer: Layer, path: os.PathLike[str], emit: Emit) -> None:
        status = f"pushing {layer.digest[7:19]}"

        def progress(done: int) -> None:
            emit(ProgressResponse(status=status, digest=layer.digest, total=layer.size, completed=done))

        head = await self.send("HEAD", repo / "blobs" / layer.digest, ok=(200, 404), what="push model")
        if head.status == 200:  # the registry has it: nothing to send
            progress(layer.size)
            return
        progress(0)
        start = await self.send("POST", repo / "blobs" / "uploads" / "", ok=(201, 202), what="push model")
        if start.status == 201:  # mounted from another repository of the same registry
            progress(layer.size)
            return
        location = self._here(start.headers.get("Docker-Upload-Location") or start.headers.get("Location", ""),
                              start.url)
        sent = 0
        with open(path, "rb") as f:  # noqa: ASYNC230 - the transfers' own loop; 1 MiB local reads
            while sent < layer.size:
                size = min(PART_SIZE, layer.size - sent)
                part = await self.send(
                    "PATCH", location, ok=(202, 204), what="push model", data=_read(f, sent, size, progress),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size),
                             "Content-Range": f"{sent}-{sent + size - 1}"})
                location = self._here(part.headers.get("Docker-Upload-Location") or part.headers.get("Location")
                                      or str(location), location)
                sent += size
        await self.send("PUT", location.update_query(digest=layer.digest), ok=(201, 204), what="push model",
                        headers={"Content-Type": "application/octet-stream", "Content-Length": "0"})
        progress(layer.size)


async def _read(f: BinaryIO, offset: int, size: int, progress: Callable[[int], None]) -> AsyncIterator[bytes]:
    """The bytes of one part, reported as they go out."""
    f.seek(offset)
    done = 0
    while done < size:
        chunk = f.read(min(_READ, size - done))
        if not chunk:
            raise RegistryError("push model: the blob file is shorter than its manifest says")
        done += len(chunk)
        yield chunk
        progress(offset + done)
