"""The model store, laid out exactly as Ollama lays it out, so both can share one directory.

::

    $OLLAMA_MODELS/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest
    $OLLAMA_MODELS/blobs/sha256-<hex>                           content-addressed blobs

This module holds the manifest half: naming, resolving, writing, copying and deleting models,
garbage-collecting the blobs no manifest uses any more, and the ``/api/tags`` listing. Blob I/O
and digest verification live in :mod:`ollama_nb.models.blobs` (:class:`Store` extends its
:class:`~ollama_nb.models.blobs.BlobStore`); their public names are re-exported here.

Every write goes to a temporary file next to its destination, is fsynced and then moved into
place with ``os.replace``, so a crash, a full disk or a bad download never leaves a half
written blob or manifest under a real name. Blobs are hashed while they are written and
refused when the hash is not the one promised.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..api.types import ModelDetails
from ..base import config
from ..base.errors import BlobNotFound, CorruptModel, InvalidDigest, ModelNotFound
from ..base.refs import ModelRef, parse_digest
from .blobs import (
    _ACTIVE_TEMPS,
    CHUNK_SIZE,
    BlobInfo,
    BlobStore,
    BlobWriter,
    _fsync_dir,
    _storage_error,
    _unlink_quietly,
)
from .capabilities import model_capabilities
from .gguf_meta import GGUFSummary, read_gguf_summary
from .manifest import (
    MEDIA_TYPE_PROJECTOR,
    TEMPLATE_MEDIA_TYPES,
    InvalidManifest,
    Layer,
    Manifest,
    ModelConfig,
)

__all__ = [
    "CHUNK_SIZE",
    "PRUNE_GRACE_SECONDS",
    "BlobInfo",
    "BlobWriter",
    "ModelDetails",
    "ModelEntry",
    "Store",
]

log = logging.getLogger(__name__)

PRUNE_GRACE_SECONDS = 3600.0  # Ollama's layerPruneGracePeriod: spare blobs a create may still need
_LOCK = threading.RLock()  # one lock for every Store: manifests and blob refcounts change together
_SUMMARY_CACHE: dict[str, GGUFSummary] = {}  # blob digest -> GGUF header facts (blobs never change)
_DIGEST_IN_TEXT = re.compile(rb"sha256[:-][0-9a-fA-F]{64}")


@dataclass(frozen=True)
class ModelEntry:
    """One model of ``/api/tags``: ``name`` and ``model`` are both the short display name."""

    name: str
    model: str
    modified_at: datetime
    size: int
    digest: str
    details: ModelDetails
    ref: ModelRef = field(compare=False)
    capabilities: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("name", "model", "modified_at", "size", "digest")}
        return {**d, "modified_at": self.modified_at.isoformat(), "details": self.details.to_dict(),
                "capabilities": list(self.capabilities)}


class Store(BlobStore):
    """Ollama's model directory: ``root`` is ``$OLLAMA_MODELS`` (read on each use) unless given."""

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    def read_layer_text(self, layer: Layer) -> str:
        """The text of a template/system/license/params/messages layer."""
        return self.read_blob_bytes(layer.digest).decode("utf-8", "replace")

    def read_config(self, manifest: Manifest) -> ModelConfig:
        """The config blob (``details`` come from it); :class:`BlobNotFound` if it is missing."""
        return ModelConfig.from_bytes(self.read_blob_bytes(manifest.config.digest))

    # -- manifests ----------------------------------------------------------------------------

    def manifest_path(self, ref: ModelRef) -> Path:
        return self.manifests_dir.joinpath(*ref.manifest_parts)

    def names(self) -> list[ModelRef]:
        """Every valid name that has a manifest file (``manifests/*/*/*/*``)."""
        found: list[ModelRef] = []
        for parts in _walk4(self.manifests_dir):
            ref = ModelRef.from_parts(*parts)
            if ref is None:
                log.warning("skipping manifest with an invalid name: %s", "/".join(parts))
            else:
                found.append(ref)
        return found

    def resolve(self, name: str | ModelRef) -> ModelRef:
        """Parse ``name`` and match it case-insensitively against the store (``getExistingName``).

        An existing model comes back with its on-disk spelling; for a new name each part takes
        the spelling of an existing directory at that level, so ``Llama`` and ``llama`` never
        end up as two directories.
        """
        ref = name if isinstance(name, ModelRef) else ModelRef.parse(name)
        matches = [r for r in self.names() if r.fold_key() == ref.fold_key()]
        if matches:
            exact = [r for r in matches if r.manifest_parts == ref.manifest_parts]
            best = exact[0] if exact else min(matches, key=lambda r: r.manifest_parts)
            return ModelRef(*best.manifest_parts, scheme=ref.scheme)
        parts, directory = list(ref.manifest_parts), self.manifests_dir
        for i, part in enumerate(parts):
            try:
                entries = sorted(os.listdir(directory))
            except OSError:
                break
            same = [e for e in entries if e.lower() == part.lower()]
            if not same:
                break
            parts[i] = part if part in same else same[0]
            directory = directory / parts[i]
        return ModelRef(*parts, scheme=ref.scheme)

    def exists(self, name: str | ModelRef) -> bool:
        return self.manifest_path(self.resolve(name)).is_file()

    def read_manifest(self, name: str | ModelRef) -> Manifest:
        """The manifest of ``name``; :class:`ModelNotFound` (``model 'NAME' not found``) if none.

        A manifest that is not JSON or names a malformed digest raises
        :class:`~ollama_nb.models.manifest.InvalidManifest` / :class:`~ollama_nb.base.errors.InvalidDigest`.
        """
        given = name if isinstance(name, str) else name.display
        path = self.manifest_path(self.resolve(name))
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ModelNotFound(given) from None
        return Manifest.from_bytes(data, source=str(path))

    def write_manifest(self, name: str | ModelRef, manifest: Manifest | bytes) -> ModelRef:
        """Atomically write a manifest (raw registry bytes are kept as they are).

        Refused with :class:`BlobNotFound` when a blob it names is not in the store, so the store
        never holds a model that cannot load. Blobs only the replaced manifest used are removed,
        unless ``OLLAMA_NOPRUNE`` is set (as Ollama's pull and create do). Returns the name as
        written on disk.
        """
        m = manifest if isinstance(manifest, Manifest) else Manifest.from_bytes(manifest)
        with _LOCK:
            for digest in sorted(m.digests()):
                if not self.has_blob(digest):
                    raise BlobNotFound(digest)
            ref = self.resolve(name)
            path = self.manifest_path(ref)
            try:
                old = Manifest.from_bytes(path.read_bytes()).digests()
            except (OSError, InvalidManifest, InvalidDigest):
                old = set()
            self._atomic_write(path, m.to_bytes())
            if old - m.digests() and not config.no_prune():
                self._remove_unused(old)
        return ref

    def _remove_unused(self, digests: set[str]) -> None:
        for digest in sorted(digests - self._referenced_digests()):
            _unlink_quietly(self.blob_path(digest))

    def _atomic_write(self, path: Path, data: bytes) -> None:
        temp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A leading "." makes the temp file an invalid tag: never mistaken for a model.
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, path)
        except OSError as exc:
            if temp is not None:
                _unlink_quietly(temp)
            raise _storage_error(exc, f"writing {path.name}", self.root) from None
        _fsync_dir(path.parent)

    def copy(self, source: str | ModelRef, destination: str | ModelRef) -> ModelRef:
        """Copy a manifest to a new name (blobs are shared); ``model "SRC" not found`` if absent."""
        src = self.resolve(source)
        try:
            data = self.manifest_path(src).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            given = source if isinstance(source, str) else source.display
            raise ModelNotFound(given, quote='"') from None
        with _LOCK:
            dst = self.resolve(destination)
            if self.manifest_path(dst) != self.manifest_path(src):
                self._atomic_write(self.manifest_path(dst), data)
        return dst

    def delete(self, name: str | ModelRef) -> ModelRef:
        """Remove a model: its manifest, then its blobs no other manifest uses, then empty dirs."""
        given = name if isinstance(name, str) else name.display
        with _LOCK:
            ref = self.resolve(name)
            path = self.manifest_path(ref)
            try:
                data = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise ModelNotFound(given) from None
            try:
                mine = Manifest.from_bytes(data).digests()
            except (InvalidManifest, InvalidDigest) as exc:  # still let a broken model be removed
                log.warning("removing unreadable manifest %s: %s", path, exc)
                mine = set()
            try:
                path.unlink()
            except OSError as exc:
                raise _storage_error(exc, f"deleting {ref.display}", self.root) from None
            _remove_empty_dirs(path.parent, stop=self.manifests_dir)
            self._remove_unused(mine)
        return ref

    def _referenced_digests(self) -> set[str]:
        """Every digest any manifest names; for a manifest that does not parse, every digest-like
        string in it (deleting its blobs would be worse than keeping a few spare ones)."""
        used: set[str] = set()
        for ref in self.names():
            try:
                data = self.manifest_path(ref).read_bytes()
            except OSError:
                continue
            try:
                used |= Manifest.from_bytes(data).digests()
            except (InvalidManifest, InvalidDigest):
                used |= {parse_digest(m.decode()) for m in _DIGEST_IN_TEXT.findall(data)}
        return used

    def prune(self, *, grace_seconds: float = PRUNE_GRACE_SECONDS) -> list[Path]:
        """Remove unreferenced blobs and leftover partial files older than ``grace_seconds``
        (Ollama spares the last hour's files: a create may not have written its manifest yet),
        then empty manifest directories. Does nothing when ``OLLAMA_NOPRUNE`` is set."""
        if config.no_prune():
            return []
        removed: list[Path] = []
        with _LOCK:
            used = self._referenced_digests()
            now = time.time()
            try:
                entries = list(os.scandir(self.blobs_dir))
            except FileNotFoundError:
                entries = []
            for entry in entries:
                if not entry.is_file(follow_symlinks=False) or entry.path in _ACTIVE_TEMPS:
                    continue
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime < grace_seconds:
                        continue
                    if parse_digest(entry.name) in used:
                        continue
                except InvalidDigest:
                    pass  # a partial download or a temp file
                except OSError:
                    continue
                _unlink_quietly(entry.path)
                removed.append(Path(entry.path))
            if self.manifests_dir.is_dir():
                for dirpath, _dirs, _files in os.walk(self.manifests_dir, topdown=False):
                    if Path(dirpath) != self.manifests_dir:
                        _remove_empty_dirs(Path(dirpath), stop=self.manifests_dir)
        return removed

    # -- listing ------------------------------------------------------------------------------

    def list_models(self) -> list[ModelEntry]:
        """``/api/tags``: newest first; a manifest or config that cannot be read is skipped and
        logged (as Ollama does), never an error for the whole list."""
        entries: list[ModelEntry] = []
        for ref in self.names():
            path = self.manifest_path(ref)
            try:
                data = path.read_bytes()
                mtime = path.stat().st_mtime
                m = Manifest.from_bytes(data, source=str(path))
                cfg = self.read_config(m)
            except (OSError, InvalidManifest, InvalidDigest, BlobNotFound, ValueError) as exc:
                log.warning("skipping model %s: %s", ref.display, exc)
                continue
            entries.append(
                ModelEntry(
                    name=ref.display,
                    model=ref.display,
                    modified_at=datetime.fromtimestamp(mtime).astimezone(),
                    size=m.size,
                    digest=m.digest,
                    details=self.details(m, cfg),
                    ref=ref,
                    capabilities=self.capabilities(m, cfg),
                )
            )
        entries.sort(key=lambda e: (-int(e.modified_at.timestamp()), e.name))
        return entries

    def details(self, manifest: Manifest, cfg: ModelConfig | None = None) -> ModelDetails:
        """``details`` from the config blob, with the quantization and context/embedding lengths
        taken from the GGUF header when the config lacks them (as Ollama's model list does)."""
        cfg = cfg if cfg is not None else self.read_config(manifest)
        layer = manifest.model_layer
        quant, ctx, emb = cfg.file_type, cfg.context_length or None, cfg.embedding_length or None
        if layer is not None and (quant in ("", "unknown") or ctx is None or emb is None):
            summary = self._gguf_summary(layer.digest)
            if summary is not None:
                if quant in ("", "unknown") and summary.file_type != "unknown":
                    quant = summary.file_type
                ctx = ctx or summary.context_length
                emb = emb or summary.embedding_length
        return ModelDetails(
            parent_model=(layer.from_ or "") if layer is not None else "",
            format=cfg.model_format,
            family=cfg.model_family,
            families=cfg.model_families,
            parameter_size=cfg.model_type,
            quantization_level=quant,
            context_length=ctx,
            embedding_length=emb,
        )

    def capabilities(self, manifest: Manifest, cfg: ModelConfig) -> list[str]:
        """The model's capabilities from its header, template layer and config (the rule is
        :func:`~ollama_nb.models.capabilities.model_capabilities`, the same one ``show`` uses)."""
        layer = manifest.model_layer
        summary = self._gguf_summary(layer.digest) if layer is not None else None
        template = next((self.read_layer_text(t) for t in manifest.layers if t.mediaType in TEMPLATE_MEDIA_TYPES),
                        None)
        has_projector = any(t.mediaType == MEDIA_TYPE_PROJECTOR for t in manifest.layers)
        return model_capabilities(summary, template, has_projector=has_projector, declared=cfg.capabilities)

    def _gguf_summary(self, digest: str) -> GGUFSummary | None:
        if digest not in _SUMMARY_CACHE:
            try:
                _SUMMARY_CACHE[digest] = read_gguf_summary(self.blob_path(digest))
            except CorruptModel as exc:
                log.debug("no GGUF header for %s: %s", digest, exc)
                return None  # not cached: the blob may still be on its way
        return _SUMMARY_CACHE[digest]


def _walk4(root: Path) -> list[tuple[str, ...]]:
    """Files exactly four levels below ``root`` (host/namespace/model/tag), sorted; dot-files
    (our temp files) are left out."""
    found = (p.relative_to(root).parts for p in root.glob("*/*/*/*") if p.is_file())
    return sorted(parts for parts in found if not any(x.startswith(".") for x in parts))


def _remove_empty_dirs(directory: Path, *, stop: Path) -> None:
    """Remove ``directory`` and its parents while they are empty, never ``stop`` itself."""
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
