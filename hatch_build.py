"""Build hook: the JupyterLab extension goes into the wheel, so `pip install ollama_nb` is all a
JupyterLab user does.

With Node.js present, the extension in ``labextension/`` is built with jlpm (JupyterLab's own
yarn) by hatch-jupyter-builder, unless the built copy in ``ollama_nb/labextension`` is newer
than its sources. The built copy is then shipped as shared data in
``share/jupyter/labextensions/ollama-nb``, where JupyterLab looks for prebuilt extensions.
Without Node.js, and without a built copy, the Python package builds alone and says so: the
kernel-side package works the same without the extension.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "labextension"
BUILT = ROOT / "ollama_nb" / "labextension"
TARGET = "share/jupyter/labextensions/ollama-nb"


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("SKIP_JUPYTER_BUILDER"):
            self.app.display_info("SKIP_JUPYTER_BUILDER is set: the JupyterLab extension is not rebuilt")
        elif shutil.which("node") is None:
            if not (BUILT / "package.json").exists():
                self.app.display_warning(
                    "Node.js not found: ollama_nb is built without its JupyterLab extension "
                    "(install Node.js >= 18 and reinstall to get the sidebar, chat panel and completer)")
        else:
            from hatch_jupyter_builder import npm_builder

            npm_builder(self.target_name, version, path=str(SOURCE), build_dir=str(BUILT / "static"),
                        source_dir=str(SOURCE / "src"), build_cmd="build:prod", npm=["jlpm"])
        if (BUILT / "package.json").exists():
            build_data["shared_data"][str(BUILT)] = TARGET
            build_data["shared_data"][str(SOURCE / "install.json")] = f"{TARGET}/install.json"
