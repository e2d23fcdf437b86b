"""Weights in 2 MiB pages: on the CPU, with ``use_mmap`` unset, the weights are read into memory
and collapsed into huge pages; ``use_mmap: true`` maps the file as before; the replies are the
same either way, and memory handed back stays handed back."""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
import sys

from ollama_nb.manager.core import ModelManager
from ollama_nb.runtime import huge_pages
from ollama_nb.runtime.memory import libc_calls, mapped_ranges

from .conftest import SMOLLM

#: Loads SmolLM2 in a fresh process with the given options and reports what the kernel says of
#: its memory: the huge pages it holds, whether the GGUF file is mapped, and what the engine saw.
_MEASURE = """
import json, sys
from ollama_nb.manager.core import ModelManager
from ollama_nb.models.store import Store
from ollama_nb.runtime import Engine

def smaps(field):
    with open("/proc/self/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith(field + ":")) * 1024

manager = ModelManager(Store(sys.argv[1]))
spec = manager.spec(sys.argv[2])
params = manager.load_params(spec, json.loads(sys.argv[3]))
before = smaps("AnonHugePages")
engine = Engine(spec.model_path, params)
with open("/proc/self/maps") as maps:
    mapped = any(line.rstrip().endswith(spec.model_path) for line in maps)
print(json.dumps({"huge": smaps("AnonHugePages") - before, "engine_huge": engine.huge_page_bytes,
                  "file_mapped": mapped, "size": engine.model_size, "works": __import__(
                      "ollama_nb.runtime.huge_pages", fromlist=["x"]).collapse_works()}))
engine.close()
"""


def _measure(models, options: dict, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(models), SMOLLM, json.dumps(options)],
                          capture_output=True, text=True, timeout=300, check=True,
                          env={**os.environ, **(env or {})})
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_weights_sit_in_huge_pages_unless_use_mmap_is_asked_for(shared_models) -> None:
    auto = _measure(shared_models, {})
    assert auto["works"], "this kernel collapses no memory into huge pages (Linux 6.1 and later do)"
    assert not auto["file_mapped"]  # read into llama.cpp's buffer, not mapped
    assert auto["engine_huge"] >= 0.8 * auto["size"]
    assert auto["huge"] >= 0.8 * auto["size"]  # the kernel agrees: that much memory is in 2 MiB pages

    mapped = _measure(shared_models, {"use_mmap": True})
    assert mapped["file_mapped"]
    assert mapped["engine_huge"] < 0.2 * mapped["size"]  # file pages are left as they are

    off = _measure(shared_models, {}, {"OLLAMA_NB_HUGE_PAGES": "0"})
    assert not off["works"] and off["file_mapped"] and off["engine_huge"] == 0 and off["huge"] == 0


def test_replies_are_the_same_from_huge_pages_and_from_the_mapped_file(manager) -> None:
    options = {"temperature": 0, "num_predict": 24}
    replies = {}
    for use_mmap in (None, True):
        m = ModelManager(manager.store)
        try:
            extra = {} if use_mmap is None else {"use_mmap": use_mmap}
            reply = m.generate(model=SMOLLM, prompt="Name three facts about the Moon.", stream=False,
                               options={**options, **extra})
            runner = next(iter(m.scheduler._runners.values()))
            assert (runner.engine.huge_page_bytes > 0) == (use_mmap is None)
            replies[use_mmap] = reply.response
        finally:
            m.close()
    assert replies[None] == replies[True] and replies[None]


def test_only_fully_resident_chunks_are_collapsed() -> None:
    """A chunk with untouched pages (a KV cache handed back) must not come back as a zero-filled
    huge page: after the collapse it is still not resident."""
    assert huge_pages.collapse_works()
    before = mapped_ranges()
    size = 4 * huge_pages.HUGE_PAGE
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        first = (base + huge_pages.HUGE_PAGE - 1) & ~(huge_pages.HUGE_PAGE - 1)
        offset = first - base
        region[offset:offset + huge_pages.HUGE_PAGE] = b"\7" * huge_pages.HUGE_PAGE  # one chunk in full
        region[offset + huge_pages.HUGE_PAGE] = 1  # and one page of the next
        assert huge_pages.collapse_resident(before) == huge_pages.HUGE_PAGE
        residency = ctypes.create_string_buffer(huge_pages.HUGE_PAGE // mmap.PAGESIZE)
        libc = libc_calls(keep_gil=False)
        assert libc.mincore(first + huge_pages.HUGE_PAGE, huge_pages.HUGE_PAGE, residency) == 0
        assert sum(b & 1 for b in residency.raw) == 1  # the next chunk: still the one page
        assert region[offset:offset + 16] == b"\7" * 16 and region[offset + huge_pages.HUGE_PAGE] == 1
        assert huge_pages.collapse_resident([]) == 0  # nothing known of before: nothing touched
    finally:
        region.close()


def test_weights_stay_mapped_where_the_gpu_computes_or_the_file_is_missing(tmp_path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(1024))
    assert huge_pages.copy_weights(str(model), 0) == huge_pages.collapse_works()
    assert not huge_pages.copy_weights(str(model), 99)
    assert not huge_pages.copy_weights(str(tmp_path / "missing.gguf"), 0)
