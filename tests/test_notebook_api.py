"""``ollama_nb.chat/generate/embed/compare`` and the comparison plots, on the real models."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import ollama_nb
from ollama_nb.api.types import ChatResponse, EmbedResponse, GenerateResponse
from ollama_nb.base.timings import COLUMNS as TIMING_COLUMNS
from ollama_nb.notebook import connection as backend

from .conftest import GEMMA, SMOLLM

GREEDY = {"temperature": 0, "seed": 1}


@pytest.fixture
def current(manager: Any) -> Iterator[Any]:
    """Make the shared manager the notebook's backend for one test."""
    previous = backend.use(manager)
    yield manager
    backend.use(previous)


def test_chat_with_a_prompt_or_messages(current: Any) -> None:
    reply = ollama_nb.chat(SMOLLM, "Say hi", options={**GREEDY, "num_predict": 6})
    assert isinstance(reply, ChatResponse) and reply.done and reply.eval_count == 6
    assert reply.message.role == "assistant" and reply.message.content
    same = ollama_nb.chat(SMOLLM, [{"role": "user", "content": "Say hi"}], options={**GREEDY, "num_predict": 6})
    assert same.message.content == reply.message.content  # a string is the user's message
    other = ollama_nb.chat(SMOLLM, prompt="Say hi", system="Answer in French.",
                           options={**GREEDY, "num_predict": 6})
    assert other.message.content != reply.message.content  # the system prompt reached the model


def test_chat_stream_yields_chunks(current: Any) -> None:
    chunks = list(ollama_nb.chat(SMOLLM, "Count to five.", stream=True, options={**GREEDY, "num_predict": 8}))
    assert all(isinstance(c, ChatResponse) for c in chunks)
    assert chunks[-1].done and chunks[-1].eval_count == 8 and not any(c.done for c in chunks[:-1])
    whole = ollama_nb.chat(SMOLLM, "Count to five.", options={**GREEDY, "num_predict": 8})
    assert "".join(c.message.content for c in chunks) == whole.message.content


def test_generate_raw_on_the_base_model(current: Any) -> None:
    reply = ollama_nb.generate(GEMMA, "The capital of France is", raw=True, options={**GREEDY, "num_predict": 8})
    assert isinstance(reply, GenerateResponse) and reply.response.strip() and reply.eval_count == 8
    assert reply.context is None  # raw mode returns no context, as in Ollama
    templated = ollama_nb.generate(SMOLLM, "Hi", options={**GREEDY, "num_predict": 2})
    assert templated.context and len(templated.context) > templated.eval_count


def test_embed(current: Any) -> None:
    res = ollama_nb.embed(SMOLLM, ["cats purr", "dogs bark"])
    assert isinstance(res, EmbedResponse) and len(res.embeddings) == 2
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in res.embeddings)
    assert len(ollama_nb.embed(SMOLLM, "one", dimensions=16).embeddings[0]) == 16


def test_compare_returns_one_row_per_model_and_prompt(current: Any) -> None:
    prompts = ["Name a colour.", "Name an animal."]
    df = ollama_nb.compare([SMOLLM, GEMMA], prompts, options={**GREEDY, "num_predict": 6})
    assert list(df.columns) == ["model", "prompt", "reply", *TIMING_COLUMNS, "error"]
    assert (df["timed_by"] == "engine").all() and df["error"].isna().all()  # the kernel timed its own replies
    assert {"eval_count", "tokens_per_second", "ttft_s", "load_s", "queue_s", "total_s"} <= set(df.columns)
    assert list(zip(df["prompt"], df["model"])) == [(p, m) for p in prompts for m in (SMOLLM, GEMMA)]
    assert (df["eval_count"] == 6).all() and df["reply"].str.len().gt(0).all()
    assert (df["tokens_per_second"] > 0).all() and (df["prompt_eval_count"] > 0).all()
    assert (df["total_s"] >= df["eval_s"] + df["prompt_eval_s"]).all() and (df["queue_s"] >= 0).all()
    assert (df["total_s"] >= df["ttft_s"]).all() and (df["ttft_s"] > 0).all() and (df["load_s"] >= 0).all()
    direct = ollama_nb.chat(SMOLLM, "Name a colour.", options={**GREEDY, "num_predict": 6})
    assert df.iloc[0]["reply"] == direct.message.content  # the same reply a plain chat gives


def test_compare_unknown_model_is_a_row_with_its_error(current: Any) -> None:
    df = ollama_nb.compare(["nosuchmodel:1b", SMOLLM], "hi", options={**GREEDY, "num_predict": 4})
    bad, good = df.iloc[0], df.iloc[1]
    assert "model 'nosuchmodel:1b' not found" in bad["error"] and bad["reply"] == "" and pd.isna(bad["eval_count"])
    assert pd.isna(good["error"]) and good["eval_count"] == 4  # the other models still ran


def test_comparison_plots(current: Any) -> None:
    from ollama_nb.observe import plots

    df = ollama_nb.compare([SMOLLM, GEMMA], ["Hi", "Bye"], options={**GREEDY, "num_predict": 3})
    fig = plots.compare_figure(df, "tokens_per_second")
    bars = fig.axes[0].patches
    assert len(bars) == 4
    assert sorted(round(b.get_height(), 6) for b in bars) == sorted(round(v, 6) for v in df["tokens_per_second"])
    timing = plots.compare_timings(df)
    assert len(timing.axes[0].patches) == 3 * len(df)  # load, prompt, generation per reply
    with pytest.raises(ValueError, match="unknown metric"):
        plots.compare_figure(df, "colour")


def test_lazy_exports_are_the_notebook_api() -> None:
    from ollama_nb.notebook import functions as notebook_api

    for name in ("chat", "generate", "embed", "compare"):
        assert getattr(ollama_nb, name) is getattr(notebook_api, name)
