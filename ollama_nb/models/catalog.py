"""From a stored manifest to everything needed to run or describe a model.

A :class:`ModelSpec` gathers the layers of one manifest (weights, adapters, template, system,
params, messages, license) plus the GGUF header facts, and answers Ollama's capability
questions (completion, tools, insert, embedding, vision, thinking) without loading the model.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..api.types import ModelDetails
from ..base.errors import ModelNotFound, UnsupportedCapability
from ..base.refs import ModelRef
from . import manifest as mf
from .capabilities import model_capabilities
from .gguf_meta import GGUFInfo, read_gguf_info, read_gguf_summary
from .store import Store


@dataclass
class ModelSpec:
    ref: ModelRef
    digest: str
    manifest: mf.Manifest
    model_path: str | None
    adapters: list[str] = field(default_factory=list)
    projector: str | None = None
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    config: mf.ModelConfig | None = None
    modified_at: dt.datetime | None = None

    @property
    def name(self) -> str:
        return self.ref.display

    @cached_property
    def gguf(self) -> GGUFInfo | None:
        return read_gguf_info(self.model_path) if self.model_path else None

    @cached_property
    def chat_template(self) -> str | None:
        """The GGUF's Jinja chat template (what current Ollama renders when no TEMPLATE is set)."""
        return self.gguf.chat_template if self.gguf else None

    @property
    def details(self) -> ModelDetails:
        cfg = self.config
        parent = next((layer.from_ for layer in self.manifest.layers if layer.from_), "") or ""
        if cfg is None:
            return ModelDetails(parent_model=parent, format="gguf")
        return ModelDetails(
            parent_model=parent,
            format=cfg.model_format or "gguf",
            family=cfg.model_family,
            families=cfg.model_families or None,
            parameter_size=cfg.model_type,
            quantization_level=cfg.file_type,
        )

    @cached_property
    def capabilities(self) -> list[str]:
        summary = read_gguf_summary(self.model_path) if self.model_path else None
        declared = self.config.capabilities if self.config else ()
        return model_capabilities(summary, self.template, has_projector=bool(self.projector), declared=declared)

    def require(self, capability: str, *, quoted: bool = True) -> None:
        """Ollama's 400 for a missing capability (``"x" does not support chat``)."""
        if capability not in self.capabilities:
            who = f'"{self.name}"' if quoted else self.ref.full
            raise UnsupportedCapability(f"{who} does not support {capability}")


def load_spec(store: Store, name: str) -> ModelSpec:
    """Resolve a name to its manifest and read every small layer into a :class:`ModelSpec`.

    An unknown model is :class:`ModelNotFound` naming it as given (``model 'llama3' not found``,
    not the filled-in ``llama3:latest``), as Ollama's handlers echo the request's name.
    """
    ref = store.resolve(name)
    try:
        manifest = store.read_manifest(ref)
    except ModelNotFound:
        raise ModelNotFound(name) from None
    spec = ModelSpec(
        ref=ref,
        digest=manifest.digest,
        manifest=manifest,
        model_path=None,
        modified_at=dt.datetime.fromtimestamp(
            store.manifest_path(ref).stat().st_mtime, tz=dt.timezone.utc
        ),
    )
    for layer in manifest.layers:
        media = layer.mediaType
        if media == mf.MEDIA_TYPE_MODEL:
            spec.model_path = str(store.blob_path(layer.digest))
        elif media == mf.MEDIA_TYPE_ADAPTER:
            spec.adapters.append(str(store.blob_path(layer.digest)))
        elif media == mf.MEDIA_TYPE_PROJECTOR:
            spec.projector = str(store.blob_path(layer.digest))
        elif media in mf.TEMPLATE_MEDIA_TYPES:
            spec.template = store.read_layer_text(layer)
        elif media == mf.MEDIA_TYPE_SYSTEM:
            spec.system = store.read_layer_text(layer)
        elif media == mf.MEDIA_TYPE_PARAMS:
            spec.params = json.loads(store.read_layer_text(layer) or "{}")
        elif media == mf.MEDIA_TYPE_MESSAGES:
            spec.messages = json.loads(store.read_layer_text(layer) or "[]")
        elif media == mf.MEDIA_TYPE_LICENSE:
            spec.license.append(store.read_layer_text(layer))
    try:
        spec.config = store.read_config(manifest)
    except (OSError, ValueError):
        spec.config = None
    if spec.model_path is None:
        raise ModelNotFound(name)
    return spec
