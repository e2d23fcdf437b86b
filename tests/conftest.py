"""Shared fixtures: one store with both bundled models (pulled once per session), and managers
that run the real llama.cpp on them. Every test gets its own OLLAMA_MODELS unless it asks for
the shared store, so nothing touches ~/.ollama."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The ``server`` and ``client`` fixtures of the /v1 and metrics tests (a module may define its
# own), the browser tests' ``page``, and the remote engines of the backend tests.
pytest_plugins = ("tests.openai_fixtures", "tests.lab_fixtures", "tests.backend_fixtures")

SMOLLM = "smollm2:135m"
GEMMA = "gemma3:270m"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    for var in ("OLLAMA_KEEP_ALIVE", "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_CONTEXT_LENGTH",
                "OLLAMA_LLM_LIBRARY", "OLLAMA_NOPRUNE", "OLLAMA_DEBUG", "OLLAMA_FLASH_ATTENTION",
                "OLLAMA_KV_CACHE_TYPE", "OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_QUEUE",
                "OLLAMA_NB_LAZY_MEMORY", "OLLAMA_NB_EXTRA_BUFFERS", "OLLAMA_NB_PROMPT_CACHE_MB",
                "OLLAMA_NB_KV_UNIFIED"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding smollm2:135m and gemma3:270m, imported from their PyPI packages."""
    from ollama_nb.models.store import Store
    from ollama_nb.registry import pull_model

    root = tmp_path_factory.mktemp("shared-models")
    store = Store(root)
    for name in (SMOLLM, GEMMA):
        statuses = [ev.status for ev in pull_model(store, name)]
        assert statuses[-1] == "success"
    return root


@pytest.fixture(scope="session")
def manager(shared_models: Path) -> Iterator[object]:
    """A manager over the shared store; models stay loaded across tests for speed."""
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store

    m = ModelManager(Store(shared_models))
    yield m
    m.close()


@pytest.fixture
def models_env(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point OLLAMA_MODELS at the shared store (for CLI subprocesses)."""
    monkeypatch.setenv("OLLAMA_MODELS", str(shared_models))
    return shared_models


TOOLS_MODEL = "tooly"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="session")
def tools_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A manager whose store holds ``tooly``: smollm2 with a Hermes-style tools template and two
    example exchanges (MESSAGE) that teach the tiny model to answer with ``<tool_call>``."""
    from ollama_nb.manager.core import ModelManager
    from ollama_nb.models.store import Store

    m = ModelManager(Store(tmp_path_factory.mktemp("tools-models")))
    modelfile = Path(__file__).parent / "data" / "tools.Modelfile"
    statuses = [ev.status for ev in m.create(TOOLS_MODEL, modelfile.read_text(), base_dir=str(modelfile.parent))]
    assert statuses[-1] == "success"
    yield m
    m.close()


def model_file(name: str) -> Path:
    """Path of a bundled GGUF inside its installed package."""
    from ollama_nb.registry.bundled import BUNDLED, bundled_files

    files = bundled_files(BUNDLED[name])
    assert len(files) == 1, "only single-file bundles have a plain GGUF path"
    return files[0]


os.environ.setdefault("PYTHONHASHSEED", "0")
