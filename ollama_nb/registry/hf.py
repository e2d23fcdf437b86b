"""Pull ``hf.co/<user>/<repo>[:<quant>]`` (or ``huggingface.co/...``): a GGUF repository on
Hugging Face becomes an Ollama model in the store.

How, and why this way:

* the repository is listed with ``huggingface_hub`` (``HfApi.model_info`` with file metadata),
  which brings ``HF_TOKEN`` / ``hf auth login`` tokens, ``HF_ENDPOINT`` mirrors and the Hub's
  error vocabulary for free, and gives each GGUF's size and **sha256** (its LFS object id);
* the GGUF whose name carries the tag as a quantization (case-insensitive; ``latest`` means
  ``Q4_K_M`` when the repo has it, as Ollama and the Hub's own Ollama endpoint do) is chosen;
  a ``.gguf`` file name works as a tag too;
* the bytes go straight into ``blobs/`` through the same resumable, parallel, verified
  downloader as registry pulls (:mod:`.transfer`): the known sha256 is the blob digest, so
  nothing unverified enters the store and nothing is stored twice (a ``hf_hub_download`` would
  first fill the Hugging Face cache, doubling the disk used). A file that *is* already in the
  Hugging Face cache is taken from there (hard-linked when possible) instead of downloaded;
* the manifest is synthesised locally like a bundled model's: a config blob from the GGUF
  header and, when the repository has them, ``template``, ``system`` and ``params`` files as
  layers (the overrides the Hub's Ollama endpoint honours). Without a ``template`` file the
  runtime renders the GGUF's own chat template.

Split GGUFs (``-00001-of-00003.gguf``) are refused with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from ..api.types import ProgressResponse
from ..base.errors import (
    DigestMismatch,
    NotSupported,
    RegistryError,
    RegistryUnauthorized,
    RegistryUnreachable,
    StorageError,
)
from ..base.refs import ModelRef
from ..models import manifest as mf
from ..models.gguf_meta import read_gguf_info
from ..models.store import Store
from . import net
from .aio import run_sync, run_with_progress
from .ollama import write_manifest
from .settings import PullSettings
from .transfer import BlobSource, commit_blobs, fetch_blob, partial_path, remove_partial

DEFAULT_ENDPOINT = "https://huggingface.co"
SMALL_FILE_LIMIT = 1 << 20
# "latest": Ollama's default quantization first, then what a person would reach for next.
PREFERRED_QUANTS = (
    "Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q5_K_S", "Q5_0", "Q6_K", "Q8_0", "IQ4_XS", "IQ4_NL",
    "Q4_1", "Q3_K_M", "IQ3_M", "Q3_K_L", "Q3_K_S", "Q2_K", "BF16", "F16", "F32",
)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT = re.compile(r"(?:^|[-._])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?=$|[-.])", re.IGNORECASE)
_EXTRA_LAYERS = (
    ("template", mf.MEDIA_TYPE_TEMPLATE),
    ("system", mf.MEDIA_TYPE_SYSTEM),
    ("params", mf.MEDIA_TYPE_PARAMS),
)


def hf_endpoint() -> str:
    """``HF_ENDPOINT`` (read now, not when huggingface_hub was imported) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT).rstrip("/")


# -- choosing the file -------------------------------------------------------------------------


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[:-5] if name.lower().endswith(".gguf") else name


def quant_of(path: str) -> str | None:
    """The quantization a GGUF file name announces (``x-Q4_K_M.gguf`` -> ``Q4_K_M``)."""
    found = _QUANT.findall(_SPLIT.sub(".gguf", path.rsplit("/", 1)[-1])[:-5])
    return found[-1].upper() if found else None


def _has_quant(path: str, tag: str) -> bool:
    stem = _stem(_SPLIT.sub(".gguf", path))
    return re.search(rf"(?:^|[-._]){re.escape(tag)}(?=$|[-.])", stem, re.IGNORECASE) is not None


def choose_gguf(files: list[str], tag: str, name: str) -> str:
    """The repository file to pull for ``tag``; errors name what the repository offers.

    >>> files = ["README.md", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-Q8_0.gguf", "mmproj-m-f16.gguf"]
    >>> choose_gguf(files, "latest", "hf.co/u/m"), choose_gguf(files, "q8_0", "hf.co/u/m")
    ('m-Q4_K_M.gguf', 'm-Q8_0.gguf')
    >>> choose_gguf(files, "Q4_K", "hf.co/u/m")
    Traceback (most recent call last):
    ...
    ollama_nb.base.errors.RegistryError: pull model manifest: file does not exist: hf.co/u/m has no GGUF file for "Q4_K" (available: Q4_K_M, Q4_K_S, Q8_0)
    """
    ggufs = sorted(
        f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.rsplit("/", 1)[-1].lower()
    )
    if not ggufs:
        raise RegistryError(
            f"pull model manifest: file does not exist: {name} has no GGUF file",
            hint="only GGUF repositories can be pulled; look for a '-GGUF' variant of the model",
        )
    if tag.lower().endswith(".gguf"):
        matches = [f for f in ggufs if f.lower() == tag.lower() or f.rsplit("/", 1)[-1].lower() == tag.lower()]
    elif tag.lower() == "latest":
        matches = []
        for quant in PREFERRED_QUANTS:
            matches = [f for f in ggufs if _has_quant(f, quant)]
            if matches:
                break
        matches = matches or ggufs
    else:
        matches = [f for f in ggufs if _has_quant(f, tag)]
    if not matches:
        offered = sorted({q for f in ggufs if (q := quant_of(f))}) or [f.rsplit("/", 1)[-1] for f in ggufs]
        raise RegistryError(
            f'pull model manifest: file does not exist: {name} has no GGUF file for "{tag}" '
            f"(available: {', '.join(offered)})",
            hint=f"pull one of them, e.g. {name}:{offered[0]}",
        )
    single = [f for f in matches if not _SPLIT.search(f)]
    if not single:
        parts = _SPLIT.search(matches[0])
        count = int(parts.group(2)) if parts else len(matches)
        raise NotSupported(
            f"{name}: the {tag} GGUF is split into {count} files, which ollama_nb cannot pull yet",
            hint="choose a quantization that is a single .gguf file, or merge the parts with "
            "llama-gguf-split --merge and `ollama-nb create` from the result",
        )
    return min(single, key=lambda f: (f.count("/"), len(f), f))


# -- talking to the Hub ------------------------------------------------------------------------


@dataclass(frozen=True)
class _RepoFile:
    path: str
    size: int | None
    sha256: str | None


def _transport_detail(exc: BaseException, url: str) -> str:
    """Go's words for an httpx transport error (what ``ollama pull`` would print)."""
    from yarl import URL

    u = URL(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    text = " ".join(str(e) for e in _chain(exc)).lower()
    if any(s in text for s in ("name or service not known", "nodename nor servname", "errno -2",
                               "errno -3", "temporary failure in name resolution",
                               "no address associated", "getaddrinfo failed")):
        return f"dial tcp: lookup {u.host}: no such host"
    if "connection refused" in text or "errno 111" in text:
        return f"dial tcp {u.host}:{port}: connect: connection refused"
    if "timed out" in text or "timeout" in text:
        return f"dial tcp {u.host}:{port}: i/o timeout"
    return str(exc) or type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _token_sent() -> bool:
    from huggingface_hub.utils import build_hf_headers

    return "authorization" in {k.lower() for k in build_hf_headers()}


def _list_repo(endpoint: str, repo_id: str, name: str) -> tuple[str, dict[str, _RepoFile]]:
    """The repository's commit and files (with sizes and LFS sha256s)."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = f"{endpoint}/api/models/{repo_id}"
    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, files_metadata=True, timeout=60)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        status = exc.response.status_code if getattr(exc, "response", None) is not None else 404
        if status in (401, 403):
            raise _unauthorized(name, status) from None
        raise RegistryError(
            "pull model manifest: file does not exist",
            hint=f"there is no Hugging Face repository {repo_id} at {endpoint}",
        ) from None
    except OfflineModeIsEnabled:
        raise RegistryUnreachable(
            "pull model manifest: Hugging Face offline mode is on (HF_HUB_OFFLINE)",
            hint="unset HF_HUB_OFFLINE to download, or use a model that is already pulled",
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            raise _unauthorized(name, status) from None
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise RegistryError(f"pull model manifest: {status}: {first}") from None
    except httpx2.TransportError as exc:
        raise RegistryUnreachable(f'pull model manifest: Get "{url}": {_transport_detail(exc, url)}') from None
    files = {
        s.rfilename: _RepoFile(
            s.rfilename,
            s.lfs.size if s.lfs is not None else s.size,
            s.lfs.sha256 if s.lfs is not None else None,
        )
        for s in info.siblings or []
    }
    return info.sha or "main", files


def _unauthorized(name: str, status: int) -> RegistryUnauthorized:
    if _token_sent():
        return RegistryUnauthorized(
            f"pull model manifest: {status}: {name} is private or gated and the Hugging Face "
            "token in use has no access to it",
            hint="request access on the model's page, or set HF_TOKEN to a token that has it",
        )
    return RegistryUnauthorized(
        f"pull model manifest: {status}: {name} is private or gated: set HF_TOKEN to a Hugging "
        "Face access token that can read it",
        hint="create a token at https://huggingface.co/settings/tokens",
    )


def _hub_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return dict(build_hf_headers())


def _resolve_url(endpoint: str, repo_id: str, revision: str, path: str) -> str:
    return f"{endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def _from_hf_cache(store: Store, repo_id: str, path: str, revision: str, digest: str) -> bool:
    """Reuse a copy another tool already put in the Hugging Face cache (verified on import)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, path, revision=revision)
    except (OSError, ValueError):  # a malformed cache is not worth failing the pull for
        return False
    if not isinstance(cached, str):
        return False
    try:  # snapshots/ holds relative symlinks into blobs/: link the real file, not the link
        store.import_file(os.path.realpath(cached), expected_digest=digest, link=True)
    except (DigestMismatch, StorageError):
        return False

    remove_partial(store, digest)  # an earlier, interrupted download of ours is not needed now
    return True


async def _fetch_small(url: str, headers: dict[str, str], settings: PullSettings) -> bytes:



    async with net.new_session(settings) as session:
        try:
            resp, _ = await net.request(session, "GET", url, headers=headers,
                                        max_redirects=settings.max_redirects)
            async with resp:
                if resp.status != 200:
                    raise RegistryError(f"pull model manifest: {resp.status}: {url}")
                return await net.read_limited(resp, SMALL_FILE_LIMIT, url.rsplit("/", 1)[-1])
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RegistryError(net.describe_network_error("GET", url, exc)) from None


# -- the pull ----------------------------------------------------------------------------------


def pull_huggingface(
    store: Store, ref: ModelRef, *, settings: PullSettings | None = None
) -> Generator[ProgressResponse, None, None]:
    """Progress events of an ``hf.co/...`` pull, with the statuses of ``ollama pull``."""

    settings = settings or PullSettings.from_env()
    yield ProgressResponse(status="pulling manifest")
    endpoint = hf_endpoint()
    repo_id = f"{ref.namespace}/{ref.model}"
    name = f"{ref.host}/{repo_id}"
    revision, files = _list_repo(endpoint, repo_id, name)
    chosen = files[choose_gguf(list(files), ref.tag, name)]
    headers = _hub_headers()
    download = _Downloader(store, endpoint, repo_id, revision, name, headers, settings)
    digest = yield from download.file(chosen)
    layers = [mf.Layer(mediaType=mf.MEDIA_TYPE_MODEL, digest=digest, size=chosen.size)]
    projector_path = choose_projector(list(files), chosen.path)
    if projector_path is not None:  # a vision model: its projector comes along, as Ollama pulls it
        projector = files[projector_path]
        projector_digest = yield from download.file(projector)
        layers.append(mf.Layer(mediaType=mf.MEDIA_TYPE_PROJECTOR, digest=projector_digest, size=projector.size))
    downloaded = digest in download.downloaded
    for filename, media_type in _EXTRA_LAYERS:
        if filename not in files:
            continue
        data = run_sync(_fetch_small(_resolve_url(endpoint, repo_id, revision, filename), headers, settings))
        if media_type == mf.MEDIA_TYPE_PARAMS:
            data = _normalise_params(data, name)
        blob = store.write_blob_bytes(data)
        yield ProgressResponse(status=f"pulling {blob.digest[7:19]}", digest=blob.digest,
                               total=blob.size, completed=blob.size)
        layers.append(mf.Layer(mediaType=media_type, digest=blob.digest, size=blob.size))

    # The config comes from the GGUF header, read before the blob is committed so the statuses
    # keep Ollama's order (layers, config, then verifying).
    gguf = partial_path(store, digest) if downloaded else store.blob_path(digest)
    config_blob = store.write_blob_bytes(_config_for(gguf).to_bytes())
    yield ProgressResponse(status=f"pulling {config_blob.digest[7:19]}", digest=config_blob.digest,
                           total=config_blob.size, completed=config_blob.size)
    yield ProgressResponse(status="verifying sha256 digest")
    if download.downloaded:
        run_sync(commit_blobs(store, download.downloaded))
    manifest = mf.Manifest(
        config=mf.Layer(mediaType=mf.MEDIA_TYPE_CONFIG, digest=config_blob.digest, size=config_blob.size),
        layers=layers,
    )
    yield from run_with_progress(lambda emit: write_manifest(store, ref, manifest, emit))
    yield ProgressResponse(status="success")


def choose_projector(files: list[str], model: str) -> str | None:
    """The vision projector to fetch with ``model``: an ``mmproj`` GGUF in the model's folder,
    in the precision llama.cpp's converter ships first (F16, then BF16, F32, Q8_0).

    >>> choose_projector(["m-Q4_K_M.gguf", "mmproj-m-f32.gguf", "mmproj-m-f16.gguf"], "m-Q4_K_M.gguf")
    'mmproj-m-f16.gguf'
    >>> choose_projector(["m-Q4_K_M.gguf"], "m-Q4_K_M.gguf") is None
    True
    """
    folder = model.rsplit("/", 1)[0] if "/" in model else ""
    candidates = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" in f.rsplit("/", 1)[-1].lower()
                        and (f.rsplit("/", 1)[0] if "/" in f else "") == folder)
    for precision in ("f16", "bf16", "f32", "q8_0"):
        for f in candidates:
            if re.search(rf"(?<![a-z0-9]){precision}(?![a-z0-9])", f.rsplit("/", 1)[-1].lower()):
                return f
    return candidates[0] if candidates else None


class _Downloader:
    """LFS files of one repository revision into the store, each verified by its sha256."""

    def __init__(self, store: Store, endpoint: str, repo_id: str, revision: str, name: str,
                 headers: dict[str, str], settings: PullSettings) -> None:
        self.store, self.endpoint, self.repo_id, self.revision = store, endpoint, repo_id, revision
        self.name, self.headers, self.settings = name, headers, settings
        self.downloaded: list[str] = []

    def file(self, repo_file: _RepoFile) -> Generator[ProgressResponse, None, str]:
        if repo_file.sha256 is None or repo_file.size is None:
            raise NotSupported(
                f"{self.name}: {repo_file.path} is not stored with Git LFS, so its sha256 is unknown",
                hint="download it yourself and `ollama-nb create` a model FROM the file",
            )
        digest = f"sha256:{repo_file.sha256.lower()}"
        label = f"pulling {digest[7:19]}"
        size = repo_file.size
        if self.store.has_blob(digest) or _from_hf_cache(self.store, self.repo_id, repo_file.path, self.revision,
                                                         digest):
            yield ProgressResponse(status=label, digest=digest, total=size, completed=size)
            return digest
        source = BlobSource(
            url=_resolve_url(self.endpoint, self.repo_id, self.revision, repo_file.path),
            headers=self.headers,
            unauthorized=_unauthorized(self.name, 401).message,
        )
        if (yield from run_with_progress(
                lambda emit: fetch_blob(self.store, digest, size, source, emit, self.settings))):
            self.downloaded.append(digest)
        return digest


def _config_for(path: Path) -> mf.ModelConfig:
    return mf.ModelConfig.for_gguf(read_gguf_info(path))


def _normalise_params(data: bytes, name: str) -> bytes:
    """A repository ``params`` file is JSON options; stored with Go's encoding (sorted keys)."""
    try:
        obj: Any = json.loads(data)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise RegistryError(f"pull model manifest: {name}: the params file is not a JSON object")
    with contextlib.suppress(TypeError):
        return mf.go_json(obj, sort_keys=True).encode()
    raise RegistryError(f"pull model manifest: {name}: the params file has unsupported values")
