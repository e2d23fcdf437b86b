"""The anchors every server benchmark is measured against: llama.cpp's own ``llama-server`` (what
Ollama runs every GGUF through, so its speed is Ollama's speed) and ``llama-bench`` (the ceiling),
built from the very llama.cpp sources the installed llama-cpp-python vendors, with the CPU
features that build was compiled with. Same code, same flags: a ratio then measures our serving
path, not a different llama.cpp.

    python bench/anchors.py            # build once (about 15 minutes on 2 cores), print the paths
    python bench/anchors.py --rebuild  # build again

The sdist comes from the package index pip is configured with (the installed version, exactly);
the binaries are cached under ``~/.cache/ollama_nb/anchors/<key>/`` (``$XDG_CACHE_HOME`` is
honoured), keyed by the llama-cpp-python version and the CMake arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

# ggml's names for the instruction sets it reports compiled in -> its CMake options.
_ISA_OPTIONS = {
    "SSE3": "GGML_SSE42", "SSSE3": "GGML_SSE42", "AVX": "GGML_AVX", "AVX_VNNI": "GGML_AVX_VNNI",
    "AVX2": "GGML_AVX2", "F16C": "GGML_F16C", "FMA": "GGML_FMA", "BMI2": "GGML_BMI2",
    "AVX512": "GGML_AVX512", "AVX512_VBMI": "GGML_AVX512_VBMI", "AVX512_VNNI": "GGML_AVX512_VNNI",
    "AVX512_BF16": "GGML_AVX512_BF16", "AMX_INT8": "GGML_AMX_INT8",
}
_GPU_OPTIONS = {"CUDA": "GGML_CUDA", "Vulkan": "GGML_VULKAN", "Metal": "GGML_METAL", "HIP": "GGML_HIP"}
TARGETS = ("llama-server", "llama-bench")


@dataclass(frozen=True)
class Anchors:
    llama_server: str
    llama_bench: str
    llama_cpp_python: str  # the version whose vendored llama.cpp they were built from
    cmake_args: list[str]


def installed_build_args() -> list[str]:
    """CMake arguments that reproduce the installed build's CPU features (and its GPU backend):
    not ``GGML_NATIVE``, which would pick this CPU's features rather than the wheel's."""
    from ollama_nb.runtime import build_info

    features = build_info.cpu_features()
    options = sorted({_ISA_OPTIONS[name] for name in features.compiled if name in _ISA_OPTIONS})
    if "AMX_INT8" in features.compiled:
        options.append("GGML_AMX_TILE")
    gpus = sorted({_GPU_OPTIONS[b] for b in build_info.backends() if b in _GPU_OPTIONS})
    args = ["-DGGML_NATIVE=OFF", *(f"-D{o}=ON" for o in options), *(f"-D{o}=ON" for o in gpus)]
    if "OPENMP" not in features.options:
        args.append("-DGGML_OPENMP=OFF")
    return args


def extra_buffers_on() -> bool:
    """Whether ours loads models with llama.cpp's CPU extra buffer types (AMX tiles, repacked
    weights) on this machine, as its probe decided. The anchors must then do as ours does:
    the same kernels make a fair ratio, and on a CPU that lists AMX but faults on it (some
    VMs) an anchor left to its default dies of SIGILL on its first prompt, as ours would."""
    from ollama_nb.runtime import extra_buffers

    return extra_buffers.decide().enabled


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ollama_nb" / "anchors"


def _key(version: str, args: list[str]) -> str:
    return f"{version}-{hashlib.sha256(' '.join(args).encode()).hexdigest()[:12]}"


def _fetch_sources(version: str, into: Path) -> Path:
    """The llama-cpp-python sdist of exactly this version, unpacked; its vendor/llama.cpp."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={version}", "-d", str(into)], check=True)
    (sdist,) = into.glob("llama_cpp_python-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    (source,) = into.glob("llama_cpp_python-*/vendor/llama.cpp")
    return source


def build(version: str, args: list[str], out: Path) -> None:
    jobs = str(os.cpu_count() or 2)
    with tempfile.TemporaryDirectory(prefix="ollama-nb-anchors-") as tmp:
        source = _fetch_sources(version, Path(tmp))
        build_dir = Path(tmp) / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                        "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", *args], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", jobs,
                        "--target", *TARGETS], check=True, stdout=subprocess.DEVNULL)
        (out / "bin").mkdir(parents=True, exist_ok=True)
        for target in TARGETS:
            shutil.copy2(build_dir / "bin" / target, out / "bin" / target)


def ensure(rebuild: bool = False) -> Anchors:
    """The cached anchors for the installed llama-cpp-python, built first if need be."""
    version = metadata.version("llama-cpp-python")
    args = installed_build_args()
    out = cache_root() / _key(version, args)
    manifest = out / "anchors.json"
    if rebuild or not manifest.exists():
        print(f"building {', '.join(TARGETS)} from llama-cpp-python {version}'s llama.cpp "
              f"({' '.join(args)}); the first build takes minutes", file=sys.stderr, flush=True)
        build(version, args, out)
        anchors = Anchors(str(out / "bin" / TARGETS[0]), str(out / "bin" / TARGETS[1]), version, args)
        manifest.write_text(json.dumps(asdict(anchors), indent=1))
    return Anchors(**json.loads(manifest.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true")
    anchors = ensure(parser.parse_args().rebuild)
    print(json.dumps(asdict(anchors), indent=1))


if __name__ == "__main__":
    main()
