"""The CPU probe and what it decides: a child process that decodes a real batch with llama.cpp's
extra buffer types off and then on, a verdict read from how that child ended, a cache per
library build, CPU and kernel, and the load parameters every verdict leads to.

Faults are real signals: the children here run the probe's own baseline pass and then die by
SIGILL, the way a CPU whose AMX tiles fault kills the real child.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_nb.runtime import extra_buffers
from ollama_nb.runtime.probe import (
    BUILD_FAULT,
    EXTRA_FAULT,
    MISMATCH,
    OK,
    PROBE_ERROR,
    ProbeReport,
    run_probe,
)

from .conftest import GEMMA, SMOLLM


@pytest.fixture
def fresh_decision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty cache directory and no decision made yet in this process; the process's real
    decision comes back afterwards, so other tests keep their (cached) verdict."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OLLAMA_NB_EXTRA_BUFFERS", raising=False)
    saved = extra_buffers._probed
    extra_buffers.reset()
    yield tmp_path / "cache"
    extra_buffers._probed = saved


def child(tmp_path: Path, body: str) -> list[str]:
    """A probe child: a script that may use the real probe's passes before it ends its own way."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


BASELINE_THEN = """
    import json, os, signal, tempfile
    from pathlib import Path
    from ollama_nb.runtime.library import lib
    from ollama_nb.runtime.probe_child import _decode
    from ollama_nb.runtime.probe_model import write_probe_model
    lc = lib()
    lc.llama_backend_init()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_probe_model(Path(tmp) / "probe.gguf")
        _decode(lc, path, extra_buffers=False, threads=2)
        print(json.dumps({"pass": "baseline"}), flush=True)
        {then}
"""


# ---- the real probe ----------------------------------------------------------------------------


def test_the_real_probe_decodes_both_passes_on_this_machine() -> None:
    """The installed build, on this CPU: both passes run and agree (or, on a CPU whose extra
    buffer types fault, the fault is caught in the child and named)."""
    report = run_probe()
    assert report.verdict in (OK, EXTRA_FAULT), report
    if report.verdict == OK:
        assert "agree" in report.detail
        from ollama_nb.runtime.build_info import cpu_features

        # the probe model's Q4_0/Q4_K weights really went to an extra buffer type (and, with
        # the types switched off, to none: the parent checks the baseline's buffers)
        if "REPACK" in cpu_features().options or "AMX_INT8" in cpu_features().compiled:
            assert set(report.extra_buffer_types) & {"CPU_REPACK", "AMX"}, report
    else:
        assert "SIG" in report.detail and "baseline ran" in report.detail


def test_a_baseline_that_still_used_extra_buffers_makes_the_probe_inconclusive(tmp_path: Path) -> None:
    """The comparison only means something if switching the extra types off really did."""
    body = """
        import json
        print(json.dumps({"pass": "baseline", "buffers": ["CPU_REPACK"]}))
        print(json.dumps({"pass": "extra", "buffers": ["CPU_REPACK"], "difference": 0.0}))
    """
    report = run_probe(child(tmp_path, body))
    assert report.verdict == PROBE_ERROR and "switched off (CPU_REPACK)" in report.detail


# ---- verdicts from how the child ended ----------------------------------------------------------


def test_a_fault_with_extra_buffers_on_is_an_extra_buffers_fault(tmp_path: Path) -> None:
    report = run_probe(child(tmp_path, BASELINE_THEN.replace("{then}", "os.kill(os.getpid(), signal.SIGILL)")))
    assert report.verdict == EXTRA_FAULT
    assert report.detail == "SIGILL with extra buffer types on; the baseline ran"


def test_a_fault_before_the_baseline_finishes_is_a_build_fault(tmp_path: Path) -> None:
    report = run_probe(child(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n"))
    assert report.verdict == BUILD_FAULT
    assert report.detail == "SIGILL even with extra buffer types off"


def test_other_fatal_signals_count_as_faults_too(tmp_path: Path) -> None:
    report = run_probe(child(tmp_path, BASELINE_THEN.replace("{then}", "os.kill(os.getpid(), signal.SIGSEGV)")))
    assert report.verdict == EXTRA_FAULT and report.detail.startswith("SIGSEGV")


def test_results_that_disagree_are_a_mismatch(tmp_path: Path) -> None:
    body = """
        import json
        print(json.dumps({"pass": "baseline"}))
        print(json.dumps({"pass": "extra", "buffers": ["AMX"], "difference": 0.4}))
    """
    report = run_probe(child(tmp_path, body))
    assert report.verdict == MISMATCH
    assert "0.4" in report.detail and report.extra_buffer_types == ["AMX"]


def test_non_finite_logits_are_a_mismatch(tmp_path: Path) -> None:
    body = """
        import json
        print(json.dumps({"pass": "baseline"}))
        print(json.dumps({"pass": "extra", "buffers": ["CPU_REPACK"], "difference": float("inf")}))
    """
    assert run_probe(child(tmp_path, body)).verdict == MISMATCH


def test_a_probe_that_fails_without_a_fault_learns_nothing(tmp_path: Path) -> None:
    report = run_probe(child(tmp_path, "raise RuntimeError('llama.cpp could not load the probe model')\n"))
    assert report.verdict == PROBE_ERROR
    assert report.detail == "the probe failed: RuntimeError: llama.cpp could not load the probe model"


def test_a_probe_that_hangs_is_stopped(tmp_path: Path) -> None:
    report = run_probe(child(tmp_path, "import time\ntime.sleep(60)\n"), timeout=1)
    assert report.verdict == PROBE_ERROR and "did not finish in 1 s" in report.detail


# ---- from verdict to decision ---------------------------------------------------------------------


@pytest.mark.parametrize(("verdict", "enabled", "refuses"), [
    (OK, True, False),
    (EXTRA_FAULT, False, False),
    (MISMATCH, False, False),
    (BUILD_FAULT, False, True),
    (PROBE_ERROR, True, False),  # nothing learned: llama.cpp's own default stays
])
def test_each_verdict_leads_to_its_decision(verdict: str, enabled: bool, refuses: bool) -> None:
    decision = extra_buffers.decision_from(ProbeReport(verdict, "why", ["CPU_REPACK"]), "probe")
    assert decision.enabled is enabled
    assert decision.refuses_loads is refuses
    assert decision.verdict == verdict and decision.buffer_types == ("CPU_REPACK",)


@pytest.mark.parametrize(("value", "enabled"), [("0", False), ("off", False), ("1", True), ("on", True)])
def test_the_override_wins_without_probing(fresh_decision: Path, monkeypatch: pytest.MonkeyPatch,
                                           value: str, enabled: bool) -> None:
    monkeypatch.setenv("OLLAMA_NB_EXTRA_BUFFERS", value)

    def must_not_probe() -> ProbeReport:
        raise AssertionError("the override must not probe")

    decision = extra_buffers.decide(must_not_probe)
    assert decision.enabled is enabled and decision.source == "OLLAMA_NB_EXTRA_BUFFERS"
    assert not (fresh_decision / "cpu-probe").exists()


def test_the_override_beats_a_cached_fault(fresh_decision: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra_buffers.store(extra_buffers.fingerprint(), ProbeReport(EXTRA_FAULT, "SIGILL"))
    monkeypatch.setenv("OLLAMA_NB_EXTRA_BUFFERS", "1")
    assert extra_buffers.decide().enabled is True


def test_a_verdict_is_probed_once_and_then_read_from_the_cache(fresh_decision: Path) -> None:
    calls = []

    def faulting_probe() -> ProbeReport:
        calls.append(1)
        return ProbeReport(EXTRA_FAULT, "SIGILL with extra buffer types on; the baseline ran")

    first = extra_buffers.decide(faulting_probe)
    assert (first.enabled, first.source, calls) == (False, "probe", [1])
    assert extra_buffers.decide(faulting_probe) is first  # once per process
    extra_buffers.reset()  # a new process, the same machine
    again = extra_buffers.decide(faulting_probe)
    assert (again.enabled, again.source, again.verdict, calls) == (False, "cache", EXTRA_FAULT, [1])
    entry = json.loads(extra_buffers.cache_file(extra_buffers.fingerprint()).read_text())
    assert entry["fingerprint"] == extra_buffers.fingerprint()
    assert entry["report"]["verdict"] == EXTRA_FAULT


def test_a_cache_entry_of_another_build_cpu_or_kernel_is_ignored(fresh_decision: Path) -> None:
    here = extra_buffers.fingerprint()
    for field in ("library", "cpu", "kernel"):
        extra_buffers.store({**here, field: here[field] + " (elsewhere)"}, ProbeReport(EXTRA_FAULT, "SIGILL"))
    # and a file under our own name whose body speaks of another build (a hash collision, an edit)
    path = extra_buffers.cache_file(here)
    path.write_text(json.dumps({"format": 1, "fingerprint": {**here, "library": "another"},
                                "report": {"verdict": EXTRA_FAULT, "detail": "SIGILL"}}))
    assert extra_buffers.read_cached(here) is None
    decision = extra_buffers.decide(lambda: ProbeReport(OK, "logits agree within 0"))
    assert (decision.enabled, decision.source) == (True, "probe")
    assert extra_buffers.read_cached(here) == ProbeReport(OK, "logits agree within 0")


def test_a_damaged_cache_file_is_probed_again(fresh_decision: Path) -> None:
    path = extra_buffers.cache_file(extra_buffers.fingerprint())
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert extra_buffers.decide(lambda: ProbeReport(OK, "fine")).source == "probe"


def test_an_inconclusive_probe_is_not_cached(fresh_decision: Path) -> None:
    decision = extra_buffers.decide(lambda: ProbeReport(PROBE_ERROR, "the probe failed: boom"))
    assert decision.enabled is True
    assert extra_buffers.read_cached(extra_buffers.fingerprint()) is None


def test_a_fault_is_announced_in_one_clear_line(fresh_decision: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ollama_nb.runtime"):
        extra_buffers.decide(lambda: ProbeReport(EXTRA_FAULT, "SIGILL with extra buffer types on; the baseline ran"))
    lines = [r.getMessage() for r in caplog.records if r.name == "ollama_nb.runtime"]
    assert len(lines) == 1
    assert "crash on this machine (SIGILL" in lines[0] and "loading models without them" in lines[0]
    assert "OLLAMA_NB_EXTRA_BUFFERS=1" in lines[0]


def test_a_cached_fault_is_not_announced_again_as_a_warning(
        fresh_decision: Path, caplog: pytest.LogCaptureFixture) -> None:
    fault = ProbeReport(EXTRA_FAULT, "SIGILL with extra buffer types on; the baseline ran")
    extra_buffers.decide(lambda: fault)  # probed now: the warning, and the verdict is cached
    extra_buffers.reset()  # a new process on the same machine
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ollama_nb.runtime"):
        decision = extra_buffers.decide(lambda: pytest.fail("a cached verdict must not probe again"))
    ours = [r for r in caplog.records if r.name == "ollama_nb.runtime"]
    assert decision.enabled is False and decision.source == "cache"
    assert [r.levelno for r in ours] == [logging.INFO] and "crash on this machine" in ours[0].getMessage()


# ---- the decision at load time, on real models -------------------------------------------------------


def _buffer_types_of_a_load(manager: object, name: str, caplog: pytest.LogCaptureFixture) -> tuple[object, set[str]]:
    from ollama_nb.runtime import Engine, LoadParams

    with caplog.at_level(logging.DEBUG, logger="ollama_nb.llama_cpp"):
        caplog.clear()
        engine = Engine(manager.spec(name).model_path, LoadParams(num_ctx=1024))
    from ollama_nb.runtime.probe_child import model_buffer_type

    types = {model_buffer_type(r.getMessage()) for r in caplog.records} - {None}
    return engine, types


def test_a_faulted_verdict_loads_every_model_without_extra_buffers(
        fresh_decision: Path, manager: object, caplog: pytest.LogCaptureFixture) -> None:
    extra_buffers.store(extra_buffers.fingerprint(), ProbeReport(EXTRA_FAULT, "SIGILL"))
    engine, types = _buffer_types_of_a_load(manager, GEMMA, caplog)
    try:
        assert engine.params.extra_buffers is False
        assert "CPU_REPACK" not in types and "AMX" not in types and types
    finally:
        engine.close()


def test_a_good_verdict_keeps_the_fast_path(fresh_decision: Path, manager: object,
                                           caplog: pytest.LogCaptureFixture) -> None:
    from ollama_nb.runtime.build_info import cpu_features

    extra_buffers.store(extra_buffers.fingerprint(), ProbeReport(OK, "logits agree"))
    engine, types = _buffer_types_of_a_load(manager, GEMMA, caplog)  # Q4_K_M: Q4_K weights repack on x86 and ARM
    try:
        assert engine.params.extra_buffers is True
        if "REPACK" in cpu_features().options:
            assert "CPU_REPACK" in types or "AMX" in types
    finally:
        engine.close()


def test_a_build_that_does_not_fit_the_cpu_refuses_to_load(fresh_decision: Path, manager: object) -> None:
    """Rather than let the kernel die: one clear error, the model not loaded, the store intact."""
    from ollama_nb.base.errors import BuildDoesNotFitCpu

    extra_buffers.store(extra_buffers.fingerprint(), ProbeReport(BUILD_FAULT, "SIGILL even with extra buffer types off"))
    before = [m.name for m in manager.list().models]
    manager.unload(SMOLLM)
    with pytest.raises(BuildDoesNotFitCpu) as caught:
        manager.generate(model=SMOLLM, prompt="hi", stream=False, options={"num_predict": 2})
    assert str(caught.value) == "the installed llama.cpp crashes on this CPU (SIGILL even with extra buffer types off)"
    assert "pip install --force-reinstall --no-cache-dir --no-deps llama-cpp-python" in caught.value.for_humans()
    assert SMOLLM not in [m.name for m in manager.ps().models]
    assert [m.name for m in manager.list().models] == before
    # A rebuilt library: the verdict is gone, and the next load probes this machine for real
    # (never a made-up "ok": on a CPU whose AMX faults that would crash the test process).
    shutil.rmtree(fresh_decision)
    extra_buffers.reset()
    assert manager.generate(model=SMOLLM, prompt="hi", stream=False, options={"num_predict": 2}).done
    assert extra_buffers.decide().source == "probe"


@pytest.mark.parametrize("name", [SMOLLM, GEMMA])
def test_a_prompt_of_more_than_512_tokens_generates(manager: object, name: str) -> None:
    """Long prompts are where a faulting AMX build dies (a few tokens survive): the prompt
    batches and the generated tokens both go through whatever extra buffer types are in use."""
    words = "The keeper of the lighthouse counted the ships that passed in the night and wrote "
    prompt = f"Summarise this log: {words * 40}"
    reply = manager.generate(model=name, prompt=prompt, stream=False,
                             options={"temperature": 0, "num_predict": 24, "num_ctx": 2048})
    assert reply.prompt_eval_count >= 512
    assert reply.eval_count > 0 and reply.response.strip()
    engine = next(r.engine for r in manager.scheduler._runners.values() if r.key.endswith(name))
    assert engine.params.extra_buffers is extra_buffers.decide().enabled
