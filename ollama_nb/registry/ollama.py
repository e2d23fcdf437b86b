"""Pull from an Ollama registry (``registry.ollama.ai`` or any server speaking its protocol),
with the progress statuses ``ollama pull`` streams (``server/images.go: PullModel``)::

    pulling manifest
    pulling <12 hex>          (digest, total, completed; one series per layer, then the config)
    verifying sha256 digest
    writing manifest
    removing unused layers    (only when a replaced manifest left blobs unused)
    success

The manifest is fetched first and checked completely (size bound, JSON shape, every digest
``sha256:<64 hex>``) before any file is created, and written last, after every blob it names is
verified in the store, so an interrupted or failed pull never leaves a model that cannot load.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import aiohttp
from yarl import URL

from ..api.types import ProgressResponse
from ..base import config
from ..base.errors import (
    InvalidDigest,
    OllamaNbError,
    RegistryError,
    RegistryUnauthorized,
    RegistryUnreachable,
)
from ..base.refs import DEFAULT_HOST, ModelRef
from ..models.manifest import MEDIA_TYPE_MANIFEST, InvalidManifest, Manifest
from ..models.store import Store
from . import net
from .aio import Emit, run_with_progress
from .settings import CREDENTIALS_HINT, PullSettings, registry_auth_headers
from .transfer import BlobSource, commit_blobs, fetch_blob

log = logging.getLogger(__name__)


def pull_registry(
    store: Store, ref: ModelRef, *, insecure: bool = False, settings: PullSettings | None = None
) -> Iterator[ProgressResponse]:
    """Progress events of a registry pull (a synchronous iterator over the download loop)."""
    settings = settings or PullSettings.from_env()
    yield from run_with_progress(lambda emit: pull_registry_async(store, ref, emit, insecure=insecure,
                                                                  settings=settings))


def registry_base(ref: ModelRef, *, insecure: bool) -> URL:
    """``https://host`` (``http://`` when insecure, as Ollama's ``--insecure`` does)."""
    if ref.scheme == "http" and not insecure:
        raise RegistryError(
            "insecure protocol http",
            hint="pass insecure=True (`ollama-nb pull --insecure`) to pull over plain http",
        )
    return URL(f"{'http' if insecure else ref.scheme}://{ref.host}")


async def pull_registry_async(
    store: Store, ref: ModelRef, emit: Emit, *, insecure: bool, settings: PullSettings
) -> None:
    base = registry_base(ref, insecure=insecure)
    emit(ProgressResponse(status="pulling manifest"))
    raw, manifest = await fetch_manifest(base, ref, settings)

    layers = {layer.digest: layer for layer in manifest.all_layers()}  # layers, then config
    downloaded: list[str] = []
    for digest, layer in layers.items():
        source = BlobSource(url=str(base / "v2" / ref.namespace / ref.model / "blobs" / digest),
                            headers=registry_auth_headers())
        if await fetch_blob(store, digest, layer.size, source, emit, settings):
            downloaded.append(digest)

    emit(ProgressResponse(status="verifying sha256 digest"))
    await commit_blobs(store, downloaded)
    await write_manifest(store, ref, raw, emit)
    emit(ProgressResponse(status="success"))


async def write_manifest(store: Store, ref: ModelRef, manifest: Manifest | bytes, emit: Emit) -> None:
    """``writing manifest`` (+ ``removing unused layers`` when the old manifest had blobs the
    new one does not); the store removes those blobs itself unless ``OLLAMA_NOPRUNE``."""
    new = manifest if isinstance(manifest, Manifest) else Manifest.from_bytes(manifest)
    try:
        old = store.read_manifest(ref).digests()
    except (OllamaNbError, OSError):  # no model by that name yet, or an unreadable one
        old = set()
    emit(ProgressResponse(status="writing manifest"))
    await asyncio.get_running_loop().run_in_executor(None, store.write_manifest, ref, manifest)
    if old - new.digests() and not config.no_prune():
        emit(ProgressResponse(status="removing unused layers"))


async def fetch_manifest(base: URL, ref: ModelRef, settings: PullSettings) -> tuple[bytes, Manifest]:
    """GET ``/v2/<namespace>/<model>/manifests/<tag>``; the raw bytes and the parsed manifest.

    Everything that goes wrong is ``pull model manifest: ...`` as in Ollama; a network that is
    not there at all is :class:`RegistryUnreachable` right away (no retries, the answer will not
    change in a second); 5xx answers are retried with back-off.
    """
    url = base / "v2" / ref.namespace / ref.model / "manifests" / ref.tag
    headers = {"Accept": MEDIA_TYPE_MANIFEST, **registry_auth_headers()}
    attempt = 0
    async with net.new_session(settings) as session:
        while True:
            attempt += 1
            try:
                resp, _final = await net.request(
                    session, "GET", url, headers=headers, max_redirects=settings.max_redirects
                )
                async with resp:
                    if resp.status in net.TRANSIENT_STATUSES and attempt < settings.max_retries:
                        await asyncio.sleep(settings.backoff(attempt))
                        continue
                    if resp.status != 200:
                        raise await _manifest_error(resp, ref)
                    data = await net.read_limited(resp, settings.max_manifest_bytes, "manifest")
                break
            except net.FatalHTTPError as exc:
                raise RegistryError(f"pull model manifest: {exc.message}", hint=exc.hint) from None
            except aiohttp.ClientConnectorError as exc:
                raise RegistryUnreachable(
                    f"pull model manifest: {net.describe_network_error('GET', url, exc)}"
                ) from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if net.is_transient(exc) and attempt < settings.max_retries:
                    await asyncio.sleep(settings.backoff(attempt))
                    continue
                raise RegistryError(
                    f"pull model manifest: {net.describe_network_error('GET', url, exc)}"
                ) from None
    return data, parse_manifest(data)


def parse_manifest(data: bytes) -> Manifest:
    """Validate a registry manifest before anything is built from it: valid JSON of the
    right shape, and every digest ``sha256:<64 hex>`` (a ``../`` in a digest would otherwise
    become a path; CVE-2024-37032)."""
    try:
        return Manifest.from_bytes(data, source="registry manifest")
    except InvalidDigest as exc:
        raise RegistryError(
            "pull model manifest: invalid digest format",
            hint=f"the registry's manifest names a malformed digest ({exc.hint}); nothing was saved",
        ) from None
    except InvalidManifest as exc:
        raise RegistryError(f"pull model manifest: {exc.message}") from None


async def _manifest_error(resp: aiohttp.ClientResponse, ref: ModelRef) -> RegistryError:
    if resp.status == 404:
        where = "https://ollama.com/library" if ref.host == DEFAULT_HOST else ref.host
        return RegistryError(
            "pull model manifest: file does not exist",
            hint=f"{ref.display} is not in the registry; check the name and tag at {where}",
        )
    detail = await error_detail(resp)
    if resp.status in (401, 403):
        return RegistryUnauthorized(
            f"pull model manifest: {resp.status}: {detail or 'unauthorized: access denied'}",
            hint=CREDENTIALS_HINT,
        )
    return RegistryError(f"pull model manifest: {resp.status}: {detail or resp.reason or 'error'}")


async def error_detail(resp: aiohttp.ClientResponse) -> str:
    """A registry's error text: ``errors[0].message`` of a Docker-style body, else the first
    line of the body, short (a hostile or confused server must not fill the terminal)."""
    try:
        body = (await resp.content.read(4096)).decode("utf-8", "replace")
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return ""
    try:
        obj = json.loads(body)
        if isinstance(obj, dict):
            errors = obj.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                return str(errors[0].get("message") or errors[0].get("code") or "")[:200]
            if isinstance(obj.get("error"), str):
                return obj["error"][:200]
    except ValueError:
        pass
    line = body.strip().splitlines()[0] if body.strip() else ""
    return "".join(c for c in line if c.isprintable())[:200]
