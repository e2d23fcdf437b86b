"""The example notebooks in notebooks/, executed top to bottom in a real kernel (nbclient) on the
bundled models, each in an empty model store of its own, so each must pull what it uses.

The checks read what a person would see: the outputs of the cells tagged ``check-*`` in the
notebook (cell metadata ``tags``), plus a few facts read back from the same kernel afterwards
(``probe``) where a rendered table would be a poor thing to parse. A magic reports failures as
an ``Error: ...`` line on stderr rather than raising, so every run also fails on such a line.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from .conftest import GEMMA, SMOLLM

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Seconds one cell may take. Each needs a few seconds at most on 2 idle cores; the margin is for
#: a busy machine, where llama.cpp threads competing for the cores slow down many times over.
CELL_TIMEOUT = 240
EXPECTED = [
    "01-quickstart.ipynb",
    "02-chat-panel.ipynb",
    "03-model-comparison.ipynb",
    "04-api-clients.ipynb",
    "05-structured-output-and-tools.ipynb",
    "06-embeddings-search.ipynb",
    "07-performance.ipynb",
    "08-remote-backends.ipynb",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- running ------------------------------------------------------------------------------------


class Run:
    """An executed notebook and the kernel it ran in (alive until the ``with`` block ends)."""

    def __init__(self, nb: Any, client: Any) -> None:
        self.nb = nb
        self.client = client

    def cells(self, tag: str) -> list[Any]:
        found = [c for c in self.nb.cells if tag in c.get("metadata", {}).get("tags", [])]
        assert found, f"no cell tagged {tag!r}"
        return found

    def outputs(self, tag: str) -> list[Any]:
        (cell,) = self.cells(tag)
        return cell.outputs

    def stdout(self, tag: str) -> str:
        return "".join(o.text for o in self.outputs(tag) if o.output_type == "stream" and o.name == "stdout")

    def data(self, tag: str, kind: str = "execute_result") -> list[dict[str, Any]]:
        return [o for o in self.outputs(tag) if o.output_type == kind]

    def result(self, tag: str) -> dict[str, Any]:
        (out,) = self.data(tag)
        return out["data"]

    def probe(self, code: str) -> Any:
        """Run ``code`` in the notebook's kernel; it must print one JSON document."""
        cell = nbformat.v4.new_code_cell(code)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return json.loads("".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"))


@pytest.fixture
def run_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``with run_notebook(name) as run:``: executes every cell in a fresh kernel whose
    OLLAMA_MODELS is an empty store under tmp_path (removed afterwards; models are big)."""
    import contextlib

    store = tmp_path / "models"
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_NB_API_KEY", raising=False)
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()

    @contextlib.contextmanager
    def run(name: str) -> Any:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            f"{name} is saved with outputs: clear them"
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                         resources={"metadata": {"path": str(workdir)}})
        try:
            with client.setup_kernel():
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
                client.set_widgets_metadata()  # as NotebookClient.execute() does at the end
                errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                          if o.output_type == "stream" and o.name == "stderr"
                          and re.search(r"^Error:", o.text, re.MULTILINE)]
                assert not errors, f"a magic failed: {errors[0].text}"
                yield Run(nb, client)
        finally:
            shutil.rmtree(store, ignore_errors=True)

    return run


def png_outputs(run: Run, tag: str) -> list[bytes]:
    pngs = []
    for cell in run.cells(tag):
        for out in cell.outputs:
            if out.output_type in ("execute_result", "display_data") and "image/png" in out.data:
                pngs.append(base64.b64decode(out.data["image/png"]))
    return pngs


def markdown_reply(run: Run, tag: str) -> tuple[str, dict[str, Any]]:
    """The streamed reply of a %%chat/%%generate cell: its final text and its metadata."""
    (out,) = run.data(tag, "display_data")
    text = out["data"].get("text/markdown", out["data"]["text/plain"])
    return text, out.get("metadata", {}).get("ollama_nb", {})


# ---- the notebooks ------------------------------------------------------------------------------


def test_every_notebook_is_tested_and_saved_without_outputs() -> None:
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == EXPECTED
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name} has outputs"
        assert "widgets" not in nb.metadata, f"{name} carries saved widget state"


def test_01_quickstart(run_notebook: Any) -> None:
    with run_notebook("01-quickstart.ipynb") as run:
        listing = run.result("check-list")
        for model in (SMOLLM, GEMMA):
            assert model in listing["text/plain"] and model in listing["text/html"]

        first, meta1 = markdown_reply(run, "check-chat-1")
        second, meta2 = markdown_reply(run, "check-chat-2")
        assert first.strip() and second.strip()
        assert meta1["model"] == meta2["model"] == SMOLLM
        assert meta1["session"] == meta2["session"] == "default"
        assert meta2["eval_count"] > 0 and meta2["tokens_per_second"] > 0
        # "And how do they form?" names no subject: an answer about black holes needs the first turn.
        assert "black hole" in second.lower()
        history = run.stdout("check-history")
        for text in ("what is a black hole?", "And how do they form?", first.strip()[:30], second.strip()[:30]):
            assert text in history
        assert "tokens/s" in run.stdout("check-stats")

        value = ast.literal_eval(run.result("check-json")["text/plain"])
        assert isinstance(value, dict) and value
        (summary,) = run.data("check-json", "display_data")
        assert summary["data"]["text/plain"].startswith("JSON reply")

        completion, meta = markdown_reply(run, "check-generate")
        assert completion.strip() and meta["model"] == GEMMA and meta["kind"] == "generate"

        printed = run.stdout("check-python").strip().splitlines()
        assert printed[0].strip() and "tokens/s" in printed[-1]

        loaded = run.result("check-ps")["text/plain"]
        assert SMOLLM in loaded and GEMMA in loaded


def test_02_chat_panel(run_notebook: Any) -> None:
    with run_notebook("02-chat-panel.ipynb") as run:
        for tag in ("chat-panel", "model-manager"):
            assert "application/vnd.jupyter.widget-view+json" in run.result(tag)
        state = run.nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        panel_id = run.result("chat-panel")["application/vnd.jupyter.widget-view+json"]["model_id"]
        assert "ollama-nb-chat-panel" in state[panel_id]["state"]["_dom_classes"]
        dropdowns = [s["state"] for s in state.values()
                     if "ollama-nb-chat-model" in s["state"].get("_dom_classes", ())]
        assert len(dropdowns) == 1 and SMOLLM in dropdowns[0]["_options_labels"]
        # Drive the displayed panel from the kernel as its Send button would.
        seen = run.probe(
            "import json\n"
            "panel.prompt.value = 'Say hi in five words.'\n"
            "panel.send.click()\n"
            "assert panel.wait(180)\n"
            "r = panel.last_result\n"
            "print(json.dumps({'text': r.text, 'eval_count': r.timings.eval_count, 'tps': r.timings.tokens_per_second,\n"
            "                  'children': len(panel.transcript.children), 'stats': panel.transcript.children[2].value}))"
        )
        assert seen["text"].strip() and seen["eval_count"] > 0 and seen["tps"] > 0
        assert seen["children"] == 3 and "tokens/s" in seen["stats"]


def test_03_model_comparison(run_notebook: Any) -> None:
    with run_notebook("03-model-comparison.ipynb") as run:
        table = run.result("check-compare")
        for model in (SMOLLM, GEMMA):
            assert model in table["text/html"]
        facts = run.probe(
            "import json\n"
            "print(json.dumps({'rows': len(df), 'models': sorted(set(df['model'])), 'prompts': len(set(df['prompt'])),\n"
            "                  'pairs': len(set(zip(df['model'], df['prompt']))), 'n_prompts': len(prompts),\n"
            "                  'tps_positive': bool((df['tokens_per_second'] > 0).all()),\n"
            "                  'tokens_positive': bool((df['eval_count'] > 0).all()),\n"
            "                  'replies': bool(df['reply'].str.strip().str.len().gt(0).all()),\n"
            "                  'summary_index': sorted(summary.index)}))"
        )
        n = facts["n_prompts"]
        assert n >= 2 and facts["prompts"] == n
        assert facts["rows"] == facts["pairs"] == 2 * n and facts["models"] == sorted([SMOLLM, GEMMA])
        assert facts["tps_positive"] and facts["tokens_positive"] and facts["replies"]
        assert facts["summary_index"] == sorted([SMOLLM, GEMMA])
        assert "tokens_per_second" in run.result("check-summary")["text/plain"]
        pngs = png_outputs(run, "check-plot")
        assert len(pngs) == 3 and all(p.startswith(PNG_MAGIC) for p in pngs)


def test_04_api_clients(run_notebook: Any) -> None:
    with run_notebook("04-api-clients.ipynb") as run:
        assert re.search(r"serving at http://127\.0\.0\.1:\d+", run.stdout("check-serve"))
        assert SMOLLM in run.stdout("check-ollama-list")
        assert run.stdout("check-ollama-chat").strip()
        chunks = [o.text for o in run.outputs("check-ollama-stream") if o.output_type == "stream" and o.name == "stdout"]
        assert len(chunks) > 2 and "".join(chunks).strip()  # arrived piece by piece
        reply, usage = run.stdout("check-openai-chat").rsplit("CompletionUsage", 1)
        assert reply.strip() and re.search(r"completion_tokens=[1-9]", usage)
        dims = re.search(r"^2 vectors of (\d+) dimensions$", run.stdout("check-openai-embed"), re.MULTILINE)
        assert dims and int(dims.group(1)) > 0
        assert "(stopped)" in run.stdout("check-stop")
        assert run.probe("import json; print(json.dumps(server.running))") is False


def test_05_structured_output_and_tools(run_notebook: Any) -> None:
    with run_notebook("05-structured-output-and-tools.ipynb") as run:
        html = run.result("check-extract")["text/html"]
        for column in ("name", "city", "age"):
            assert f"<th>{column}</th>" in html
        facts = run.probe(
            "import json\n"
            "print(json.dumps({'columns': list(people.columns), 'schema': sorted(schema['properties']),\n"
            "                  'rows': people.to_dict('records'), 'sentences': sentences}))"
        )
        assert facts["columns"] == ["name", "city", "age"] and sorted(facts["columns"]) == facts["schema"]
        assert len(facts["rows"]) == len(facts["sentences"]) >= 3
        for row, sentence in zip(facts["rows"], facts["sentences"]):
            assert isinstance(row["age"], int) and str(row["age"]) in sentence  # extracted, not invented
            assert row["city"] and row["city"] in sentence

        assert "tool call: get_weather {'city': 'London'}" in run.stdout("check-tool-call")
        out = run.stdout("check-tool-answer")
        assert "get_weather({'city': 'London'}) -> {'city': 'London'" in out
        answer = out.split("answer:", 1)[1].strip()
        assert answer and "<tool" not in answer and "rain" in answer.lower()  # used the tool's result


def test_06_embeddings_search(run_notebook: Any) -> None:
    with run_notebook("06-embeddings-search.ipynb") as run:
        assert "Pandas DataFrames" in run.result("check-search")["text/html"]
        top = run.probe(
            "import json\n"
            "best = results[results['rank'] == 1]\n"
            "print(json.dumps({'top': dict(zip(best['query'], best['document'])), 'n': len(results),\n"
            "                  'sorted': bool(all((g['score'].diff().dropna() <= 0).all()\n"
            "                                     for _, g in results.groupby('query')))}))"
        )
        assert top["top"] == {
            "How do I analyse tables of data in Python?": "Pandas DataFrames make it easy to analyse tables of data.",
            "recipe for baking bread": "Bake the bread in a hot oven for thirty minutes.",
        }
        assert top["n"] == 6 and top["sorted"]
        shown = run.result("check-top")["text/html"]
        assert "Bake the bread" in shown and "Pandas DataFrames" in shown


def test_07_performance(run_notebook: Any) -> None:
    with run_notebook("07-performance.ipynb") as run:
        assert "tokens_per_second" in run.result("check-metrics")["text/html"]
        info = run.stdout("check-info")
        assert "  Extra buffer types\n" in info and "    num_thread          automatic: " in info
        assert "llama-cpp-python" in info
        facts = run.probe(
            "import json\n"
            "print(json.dumps({'rows': len(metrics), 'endpoints': sorted(set(metrics['endpoint'])),\n"
            "                  'models': sorted(set(metrics['model'])),\n"
            "                  'tps': bool((metrics['tokens_per_second'] > 0).all()),\n"
            "                  'after_stop': len(server.metrics.to_dataframe())}))"
        )
        # three native chats, one generate, two OpenAI chats: every request the server answered
        assert facts["rows"] == 6 and facts["after_stop"] == 6
        assert facts["endpoints"] == ["chat", "generate"] and facts["models"] == [SMOLLM]
        assert facts["tps"]
        assert SMOLLM in run.result("check-summary")["text/plain"]
        pngs = png_outputs(run, "check-plot")
        assert len(pngs) == 2 and all(p.startswith(PNG_MAGIC) for p in pngs)
        url = re.search(r"serving at (http://127\.0\.0\.1:(\d+))", run.stdout("check-serve"))
        assert url
        links = run.result("check-links")["text/markdown"]
        assert f"[{url[1]}/dashboard]({url[1]}/dashboard)" in links
        assert f"`/proxy/{url[2]}/dashboard`" in links


def test_08_remote_backends(run_notebook: Any) -> None:
    with run_notebook("08-remote-backends.ipynb") as run:
        assert "the stand-in answers at http://127.0.0.1:" in run.stdout("check-standin")
        backends = run.result("check-backends")["text/plain"]
        for name in ("local", "gpu", "engine"):
            assert name in backends
        assert "unreachable" not in backends and backends.count(" ok ") >= 3
        listing = run.result("check-list")["text/plain"]
        assert "gpu/gemma3:270m" in listing and "engine/smollm2:135m" in listing
        reply, meta = markdown_reply(run, "check-chat")
        assert reply.strip() and meta["model"] == "gpu/gemma3:270m" and meta["timed_by"] == "client-side: ttft_s"
        facts = run.probe(
            "import json\n"
            "print(json.dumps({'models': list(table['model']), 'timed_by': list(table['timed_by']),\n"
            "                  'tokens': [int(n) for n in table['eval_count']], 'errors': int(table['error'].notna().sum())}))")
        assert facts == {"models": ["smollm2:135m", "gpu/gemma3:270m", "engine/smollm2:135m"],
                         "timed_by": ["engine", "client-side: ttft_s",
                                      "client-side: tokens_per_second, ttft_s, eval_s, total_s"],
                         "tokens": [24, 24, 24], "errors": 0}
