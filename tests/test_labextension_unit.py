"""The JupyterLab extension's own unit tests (vitest, in labextension/src/__tests__): its API
client, SSE and NDJSON parsing, server discovery, pull progress, and the completer's debounce
and cancel. Run here so that the one test command covers them; they need Node.js, which
`.ci/run` installs (without Node the Python package works alone, and these are skipped)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parents[1] / "labextension"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: the extension is not built")
def test_the_extensions_unit_tests_pass() -> None:
    jlpm = shutil.which("jlpm")
    assert jlpm, "jlpm comes with jupyterlab, a test dependency"
    if not (LABEXTENSION / "node_modules").exists():
        subprocess.run([jlpm, "install"], cwd=LABEXTENSION, check=True, capture_output=True, timeout=900)
    done = subprocess.run([jlpm, "test"], cwd=LABEXTENSION, capture_output=True, text=True, timeout=600)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "failed" not in report.split("Test Files")[-1].split("\n")[0], report
