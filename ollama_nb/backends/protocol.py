"""What every face needs from a model server: the kernel's :class:`~ollama_nb.manager.ModelManager`,
a remote Ollama (:class:`~ollama_nb.client.Client`), an OpenAI-compatible engine and the
:class:`~ollama_nb.backends.router.Router` over all of them fit it, with the same method names and
the same return types (``ollama_nb.api.types``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..api.types import (
        EmbedResponse,
        InfoResponse,
        ListResponse,
        ProcessResponse,
        ProgressResponse,
        ShowResponse,
    )

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """What the notebook faces need from a model server (ModelManager and Client both fit)."""

    def list(self) -> ListResponse: ...

    def show(self, name: str, *, verbose: bool = False) -> ShowResponse: ...

    def ps(self) -> ProcessResponse: ...

    def info(self) -> InfoResponse: ...

    def pull(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]: ...

    def push(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]: ...

    def create(self, name: str, modelfile: str | None = None, *, base_dir: str | None = None,
               quantize: str | None = None) -> Iterator[ProgressResponse]: ...

    def copy(self, source: str, destination: str) -> None: ...

    def delete(self, name: str) -> None: ...

    def unload(self, name: str) -> bool: ...

    def chat(self, request: Any = None, /, **fields: Any) -> Any: ...

    def generate(self, request: Any = None, /, **fields: Any) -> Any: ...

    def embed(self, request: Any = None, /, **fields: Any) -> EmbedResponse: ...
