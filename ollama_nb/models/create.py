"""``ollama create``: a Modelfile becomes a manifest whose layers a real Ollama accepts.

FROM may name a stored model (its layers are inherited, and a bundled model is pulled first), a
local GGUF file, or a directory holding one. A vision projector (``mmproj-*.gguf``) beside that
GGUF, or named by a second FROM, becomes the model's projector layer. TEMPLATE, SYSTEM, PARAMETER, MESSAGE, ADAPTER and
LICENSE become their own layers; parameters merge over the base model's. ``quantize`` runs
llama.cpp's own quantizer on F16/F32/BF16 weights, as Ollama allows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..api.types import ProgressResponse
from ..base.errors import InvalidRequest, ModelfileError, ModelNotFound
from ..base.refs import ModelRef
from . import manifest as mf
from .gguf_meta import read_gguf_info
from .modelfile import Modelfile, is_local_path, parse_modelfile
from .options import merge_options

if TYPE_CHECKING:
    from .catalog import ModelSpec
    from .store import Store

#: Loads a stored model's spec by name (ModelNotFound when it is not stored).
SpecLoader = Callable[[str], "ModelSpec"]
#: Brings a missing FROM model into the store if it can (a bundled model); False when it cannot.
BaseFetcher = Callable[[str], bool]

# llama_ftype values of llama.h for the types Ollama's create accepts.
QUANTIZE_TYPES: dict[str, int] = {
    "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11,
    "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17,
    "Q6_K": 18, "F16": 1, "BF16": 32,
}
QUANTIZABLE_SOURCES = {"F32", "F16", "BF16"}


def _layer(info: object, media_type: str) -> mf.Layer:
    return mf.Layer(mediaType=media_type, digest=info.digest, size=info.size)  # type: ignore[attr-defined]


def _status_for(info: object) -> ProgressResponse:
    verb = "creating new layer" if getattr(info, "created", True) else "using existing layer"
    return ProgressResponse(status=f"{verb} {info.digest}")  # type: ignore[attr-defined]


def _is_projector_name(path: Path) -> bool:
    return "mmproj" in path.name.lower()


def _projectors_beside(source: Path) -> list[Path]:
    """Vision projectors shipped next to a model GGUF (``mmproj-*.gguf``, as Hugging Face repos
    and llama.cpp's converter name them): they come along, as Ollama's create takes them."""
    return sorted(p for p in source.parent.glob("*.gguf") if p != source and _is_projector_name(p))


def _projector_layer(store: Store, path: Path) -> tuple[mf.Layer, ProgressResponse]:
    """Import a vision projector, after checking it is one (a CLIP-style ``mmproj`` GGUF)."""
    info = read_gguf_info(path)
    if info.architecture != "clip" and "clip.projector_type" not in info.kv:
        raise InvalidRequest(f"{path} is not a vision projector (general.architecture is {info.architecture!r}, "
                             "a projector's is 'clip')")
    blob = store.import_file(path)
    return _layer(blob, mf.MEDIA_TYPE_PROJECTOR), _status_for(blob)


def _find_gguf(path: Path) -> Path:
    if path.is_dir():
        found = sorted(p for p in path.glob("*.gguf") if not _is_projector_name(p))
        if not found:
            raise InvalidRequest(
                f"no GGUF file in {path}",
                hint="converting safetensors directories is not supported; export a GGUF with llama.cpp's convert script",
            )
        return found[0]
    if not path.exists():
        raise InvalidRequest(f"FROM file {path} does not exist")
    return path


def _find_projector(path: Path) -> Path:
    """A second FROM: a projector GGUF, or a directory holding one."""
    if path.is_dir():
        found = sorted(p for p in path.glob("*.gguf") if _is_projector_name(p)) or sorted(path.glob("*.gguf"))
        if not found:
            raise InvalidRequest(f"no GGUF file in {path}")
        return found[0]
    if not path.exists():
        raise InvalidRequest(f"FROM file {path} does not exist",
                             hint="a second FROM names a vision projector (an mmproj GGUF) for the model")
    return path


def create_from_modelfile(
    store: Store,
    name: str,
    text: str,
    *,
    load_spec: SpecLoader,
    fetch_base: BaseFetcher,
    base_dir: str | None = None,
    quantize: str | None = None,
) -> Iterator[ProgressResponse]:
    target = ModelRef.parse(name)
    parsed = parse_modelfile(text).resolve_paths(base_dir or os.getcwd())
    if not parsed.from_:
        raise ModelfileError("no FROM line")
    yield from create_model(store, target, parsed, load_spec=load_spec, fetch_base=fetch_base, quantize=quantize)


def create_model(
    store: Store, target: ModelRef, spec_mf: Modelfile, *, load_spec: SpecLoader, fetch_base: BaseFetcher,
    quantize: str | None = None,
) -> Iterator[ProgressResponse]:
    """Build and write the manifest; nothing is written until every layer is in the store."""
    layers: list[mf.Layer] = []
    projectors: list[Path] = [_find_projector(Path(extra)) for extra in spec_mf.extra_from]
    inherited: dict[str, list[mf.Layer]] = {}
    base_params: dict[str, object] = {}
    model_path: str

    if is_local_path(spec_mf.from_, os.getcwd()) or os.path.isabs(spec_mf.from_):
        source = _find_gguf(Path(spec_mf.from_))
        yield ProgressResponse(status="parsing GGUF")
        info = read_gguf_info(source)
        if info.is_adapter:
            raise InvalidRequest(f"{source} is a LoRA adapter; use it with ADAPTER, not FROM")
        blob = store.import_file(source)
        yield _status_for(blob)
        layers.append(_layer(blob, mf.MEDIA_TYPE_MODEL))
        model_path = str(store.blob_path(blob.digest))
        projectors.extend(_projectors_beside(source))
    else:
        base = _base_spec(load_spec, fetch_base, spec_mf.from_)
        for layer in base.manifest.layers:
            inherited.setdefault(layer.mediaType, []).append(layer)
        model_layer = inherited[mf.MEDIA_TYPE_MODEL][0]
        layers.append(mf.Layer(mediaType=model_layer.mediaType, digest=model_layer.digest,
                               size=model_layer.size, from_=base.ref.display))
        yield ProgressResponse(status=f"using existing layer {model_layer.digest}")
        base_params = dict(base.params)
        model_path = str(store.blob_path(model_layer.digest))

    if quantize:
        new_layer, model_path = yield from _quantize(store, model_path, quantize)
        layers[0] = new_layer

    config = mf.ModelConfig.for_gguf(read_gguf_info(model_path))

    for adapter in spec_mf.adapters:
        path = _find_gguf(Path(adapter))
        adapter_info = read_gguf_info(path)
        if not adapter_info.is_adapter:
            raise InvalidRequest(f"{path} is not a LoRA adapter GGUF (general.type is {adapter_info.general_type!r})")
        blob = store.import_file(path)
        yield _status_for(blob)
        layers.append(_layer(blob, mf.MEDIA_TYPE_ADAPTER))
    if not spec_mf.adapters:
        layers.extend(inherited.get(mf.MEDIA_TYPE_ADAPTER, []))

    text_layers = [
        (spec_mf.template, mf.MEDIA_TYPE_TEMPLATE, mf.TEMPLATE_MEDIA_TYPES),
        (spec_mf.system, mf.MEDIA_TYPE_SYSTEM, {mf.MEDIA_TYPE_SYSTEM}),
    ]
    for value, media, replaces in text_layers:
        if value is not None:
            blob = store.write_blob_bytes(value.encode())
            yield _status_for(blob)
            layers.append(_layer(blob, media))
        else:
            for m in replaces:
                layers.extend(inherited.get(m, []))

    params = merge_options(base_params, spec_mf.parameters) if spec_mf.parameters else base_params
    if params:
        blob = store.write_blob_bytes(mf.go_json(params, sort_keys=True).encode())
        yield _status_for(blob)
        layers.append(_layer(blob, mf.MEDIA_TYPE_PARAMS))

    if spec_mf.messages:
        blob = store.write_blob_bytes(mf.go_json(spec_mf.messages).encode())
        yield _status_for(blob)
        layers.append(_layer(blob, mf.MEDIA_TYPE_MESSAGES))
    else:
        layers.extend(inherited.get(mf.MEDIA_TYPE_MESSAGES, []))

    if spec_mf.license:
        for text in spec_mf.license:
            blob = store.write_blob_bytes(text.encode())
            yield _status_for(blob)
            layers.append(_layer(blob, mf.MEDIA_TYPE_LICENSE))
    else:
        layers.extend(inherited.get(mf.MEDIA_TYPE_LICENSE, []))
    if projectors:
        for path in dict.fromkeys(projectors):
            layer, status = _projector_layer(store, path)
            yield status
            layers.append(layer)
    else:
        layers.extend(inherited.get(mf.MEDIA_TYPE_PROJECTOR, []))

    config_blob = store.write_blob_bytes(config.to_bytes())
    manifest = mf.Manifest(config=_layer(config_blob, mf.MEDIA_TYPE_CONFIG), layers=layers)
    yield ProgressResponse(status="writing manifest")
    store.write_manifest(target, manifest)
    yield ProgressResponse(status="success")


def _base_spec(load_spec: SpecLoader, fetch_base: BaseFetcher, name: str) -> ModelSpec:
    try:
        return load_spec(name)
    except ModelNotFound:
        if not fetch_base(name):
            raise
        return load_spec(name)


def _quantize(store: Store, model_path: str, quantize: str) -> Iterator[ProgressResponse]:
    """Requantize into a temp file beside the blobs, then import it; returns (layer, path)."""
    from ..runtime import quantize as run_quantize

    wanted = quantize.upper()
    if wanted not in QUANTIZE_TYPES:
        raise InvalidRequest(f"unsupported quantization type {quantize}")
    source_type = read_gguf_info(model_path).file_type
    if source_type not in QUANTIZABLE_SOURCES:
        raise InvalidRequest(
            f"quantization is only supported for F16 and F32 models (this model is {source_type})"
        )
    yield ProgressResponse(status=f"quantizing {source_type} model to {wanted}")
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="quantize-", suffix=".gguf", dir=store.blobs_dir)
    os.close(fd)
    try:
        run_quantize(model_path, tmp, QUANTIZE_TYPES[wanted])
        yield ProgressResponse(status="verifying conversion")
        read_gguf_info(tmp)
        blob = store.import_file(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
    yield _status_for(blob)
    return _layer(blob, mf.MEDIA_TYPE_MODEL), str(store.blob_path(blob.digest))
