"""What `pip install` puts where: the Python package always, and the prebuilt JupyterLab
extension as shared data when Node.js could build it. A machine without Node.js still gets a
working Python package, and a message saying why the extension is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tracked_copy(target: Path) -> Path:
    """The repository as a fresh clone has it (tracked files only: nothing built)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_without_node_the_wheel_builds_without_the_extension_and_says_so(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "src")
    assert not (source / "ollama_nb" / "labextension").exists()
    # Only the interpreter's own directory on PATH: no node, no npm, no jlpm.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    env.pop("SKIP_JUPYTER_BUILDER", None)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"), str(source)],
        env=env, capture_output=True, text=True, timeout=900)
    log = built.stdout + built.stderr
    assert built.returncode == 0, log[-4000:]
    assert "Node.js not found: ollama_nb is built without its JupyterLab extension" in log
    (wheel,) = (tmp_path / "dist").glob("ollama_nb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ollama_nb/__init__.py" in names and "ollama_nb/server/static/dashboard.html" in names
    assert not [n for n in names if "labextensions" in n]
