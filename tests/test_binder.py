"""binder/ on this machine: the environment it names, then its postBuild against an empty model
store, then the quickstart notebook in the environment that results.

repo2docker makes the environment from binder/environment.yml with conda-forge, which this
machine cannot reach; the same packages come from PyPI here instead, into a fresh virtual
environment (llama-cpp-python as pip builds it, where conda-forge would give a prebuilt one).
Everything after that is what Binder runs: ``binder/postBuild`` in a copy of the repository as
a fresh clone has it, then the notebook, executed by nbclient with that environment's kernel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_packaging import _tracked_copy

REPO = Path(__file__).resolve().parents[1]
CONDA_ONLY = {"python", "pip", "nodejs"}  # the interpreter, its installer, and Node (from Debian here)

pytestmark = pytest.mark.slow


def _environment_packages() -> list[str]:
    """The packages environment.yml names, as requirement strings (conda's `=` pin as `==`)."""
    text = (REPO / "binder" / "environment.yml").read_text()
    block = text.split("dependencies:", 1)[1]
    specs = [line.split("#", 1)[0].strip()[2:].strip() for line in block.splitlines()
             if line.strip().startswith("- ")]
    return [re.sub(r"(?<![<>=!])=(?!=)", "==", spec) for spec in specs if spec]


def test_environment_yml_names_what_postbuild_relies_on() -> None:
    names = {re.split(r"[<>=!]", spec)[0] for spec in _environment_packages()}
    assert {"python", "llama-cpp-python", "jupyterlab", "jupyter-server-proxy", "ipywidgets", "nodejs"} <= names


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (Binder has it from conda)")
def test_postbuild_then_the_quickstart_runs_in_a_fresh_environment(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "repo")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "OLLAMA_MODELS": str(tmp_path / "models"), "VIRTUAL_ENV": str(venv)}
    for var in ("OLLAMA_HOST", "PYTHONPATH"):
        env.pop(var, None)

    def run(*cmd: str, cwd: Path = source, timeout: int = 1200) -> str:
        done = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{cmd} failed:\n{(done.stdout + done.stderr)[-5000:]}"
        return done.stdout + done.stderr

    # what conda would have installed from environment.yml: every package resolves
    pip_names = [spec for spec in _environment_packages() if re.split(r"[<>=!]", spec)[0] not in CONDA_ONLY]
    run(str(python), "-m", "pip", "install", "--quiet", *pip_names)
    # Binder's build step, against an empty model store
    run("bash", str(source / "binder" / "postBuild"))
    listing = run(str(venv / "bin" / "ollama-nb"), "list")
    assert "smollm2:135m" in listing and "gemma3:270m" in listing
    extensions = run(str(venv / "bin" / "jupyter"), "labextension", "list")
    assert re.search(r"ollama-nb v[\d.]+ .*enabled.*OK", extensions), extensions
    # the notebook the README's Binder badge opens
    notebook = source / "notebooks" / "01-quickstart.ipynb"
    run(str(python), "-c",
        "import sys, nbformat; from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, timeout=300, kernel_name='python3').execute()\n"
        "errors = [o for c in nb.cells for o in c.get('outputs', []) if o.get('output_type') == 'error']\n"
        "assert not errors, errors\n"
        "print('cells run:', sum(1 for c in nb.cells if c.cell_type == 'code'))",
        str(notebook), cwd=notebook.parent)
