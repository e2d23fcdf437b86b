"""Inline completion latency in JupyterLab: from the keystroke to the suggestion on screen.

A real JupyterLab with the extension, a kernel serving SmolLM2, headless Chromium typing in a
code cell. Each round types a line and the start of the next at once, and the page records, with
``performance.now()``, when the last key went down and when the model's ghost text appeared. The
baseline, measured in the same run against the same server, is the request alone: the same
``/api/generate`` the completer sends, timed from Python (no browser, no proxy, no debounce).
The difference is what the extension, JupyterLab and jupyter-server-proxy add. Results go to
bench/results/completion.{json,md}.

    python bench/bench_completion.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lab_fixtures import CHROMIUM, CHROMIUM_ARGS, running_jupyterlab, wait_for_kernel  # noqa: E402

MODEL = "smollm2:135m"
MAX_TOKENS = 12
DEBOUNCE_MS = 150
LINES = ["def add(a, b):", "def area(radius):", "def greet(name):", "def mean(values):"]

_WATCH = """() => {
    window.__shown = null;
    new MutationObserver(() => {
        if (window.__shown === null && document.querySelector('.jp-GhostText[data-provided-by="ollama-nb:inline"]'))
            window.__shown = performance.now();
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
    window.__keydown = null;
    document.addEventListener('keydown', () => { window.__keydown = performance.now(); }, {capture: true});
}"""


def _generate_ms(server_url: str, prompt: str) -> float:
    body = json.dumps({"model": MODEL, "prompt": prompt, "raw": True, "stream": False,
                       "options": {"num_predict": MAX_TOKENS, "temperature": 0.2, "stop": ["\n\n\n", "```"]}})
    start = time.perf_counter()
    request = urllib.request.Request(server_url + "/api/generate", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=120) as res:
        res.read()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    import nbformat
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    root = tmp / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext ollama_nb", f"%ollama pull {MODEL}",
        "import ollama_nb\nserver = ollama_nb.serve(port=0)\nprint(server.url)")] + [nbformat.v4.new_code_cell("")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / "bench.ipynb")
    settings = {"ollama-nb/plugin": {"inlineCompletion": True, "completionModel": MODEL,
                                     "completionMaxTokens": MAX_TOKENS, "completionDebounceMs": DEBOUNCE_MS}}
    shown_ms: list[float] = []
    direct_ms: list[float] = []
    with running_jupyterlab(tmp, root, settings=settings) as (url, token), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(180_000)
        page.goto(f"{url}/lab/tree/bench.ipynb?token={token}")
        page.locator(".jp-NotebookPanel").first.wait_for(state="visible")
        wait_for_kernel(url, token, "bench.ipynb")
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        served = page.locator(".jp-OutputArea-output", has_text="http://127.0.0.1:")
        served.wait_for()
        server_url = re.search(r"http://127\.0\.0\.1:\d+", served.inner_text()).group(0)
        page.wait_for_function("() => document.querySelector('.jp-Notebook-ExecutionIndicator')"
                               "?.getAttribute('data-status') === 'idle'")
        _generate_ms(server_url, "def warm_up():\n")  # the model is loaded before the first round
        page.evaluate(_WATCH)
        editor = page.locator(".jp-NotebookPanel .jp-Cell").last.locator(".cm-content")
        for i in range(args.rounds):
            line = LINES[i % len(LINES)]
            editor.click()
            page.keyboard.press("Control+a")
            page.keyboard.press("Delete")
            page.wait_for_function(  # the last round's suggestion is gone with its text
                "() => !document.querySelector('.jp-GhostText[data-provided-by=\"ollama-nb:inline\"]')")
            page.wait_for_timeout(DEBOUNCE_MS * 4)
            page.evaluate("() => { window.__shown = null; window.__keydown = null; }")
            page.keyboard.type(line + "\n    ret")  # typed at once: the clock starts at its last key
            try:
                page.wait_for_function("() => window.__shown !== null", timeout=60_000)
            except Exception:
                page.screenshot(path=str(tmp / "failure.png"))
                print(f"no suggestion shown; screenshot in {tmp / 'failure.png'}", file=sys.stderr)
                raise
            shown_ms.append(page.evaluate("() => window.__shown - window.__keydown"))
            direct_ms.append(_generate_ms(server_url, line + "\n    ret"))
            print(f"round {i + 1}: shown after {shown_ms[-1]:.0f} ms, request alone {direct_ms[-1]:.0f} ms",
                  file=sys.stderr)
        browser.close()

    shown, direct = statistics.median(shown_ms), statistics.median(direct_ms)
    result = {"model": MODEL, "max_tokens": MAX_TOKENS, "debounce_ms": DEBOUNCE_MS, "rounds": args.rounds,
              "when": time.strftime("%Y-%m-%d %H:%M"), "keystroke_to_suggestion_ms": shown_ms,
              "request_alone_ms": direct_ms, "median_shown_ms": shown, "median_request_ms": direct}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "completion.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Inline completion: keystroke to suggestion ({MODEL}, {MAX_TOKENS} tokens, debounce {DEBOUNCE_MS} ms, "
        f"median of {args.rounds}, {result['when']})",
        "",
        "| measure | median | range |",
        "|---|---|---|",
        f"| keystroke to suggestion shown (browser) | {shown:.0f} ms | {min(shown_ms):.0f}–{max(shown_ms):.0f} ms |",
        f"| the same request alone (`/api/generate` from Python) | {direct:.0f} ms "
        f"| {min(direct_ms):.0f}–{max(direct_ms):.0f} ms |",
        f"| added by the debounce, the extension, JupyterLab and the proxy | {shown - direct:+.0f} ms | |",
    ]
    (out / "completion.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
