"""The runtime report: :class:`~ollama_nb.api.types.InfoResponse`, the body of ``GET /api/info``,
gathered from the runtime, the settings and the loaded models, and laid out for a person (the
same sections in ``ollama-nb info`` and ``%ollama info``, in the two-column style of ``ollama show``).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ..api.types import (
    CpuInfo,
    DeviceInfo,
    ExtraBuffersInfo,
    InfoResponse,
    LoadedRuntime,
    ThreadsInfo,
)
from ..base import config
from ..runtime import build_info, extra_buffers, supports_gpu_offload, threads

if TYPE_CHECKING:
    from ..serving.scheduler import RunnerInfo


def collect_info(loaded_runners: Sequence[RunnerInfo]) -> InfoResponse:
    """What the runtime is doing on this machine, for ``ollama-nb info``, ``%ollama info`` and
    ``GET /api/info``: the build, its devices, the CPU probe's verdict, the thread count it
    would use now and how each loaded model really runs. May run the CPU probe (once)."""
    try:
        own_version = version("ollama_nb")
    except PackageNotFoundError:
        own_version = "unknown"
    decision = extra_buffers.decide()
    governor = threads.ThreadGovernor()
    choice = governor.measure_now(0.2)
    features = build_info.cpu_features()
    fa = config.flash_attention()
    kv_names = {v: k for k, v in config.KV_CACHE_TYPES.items()}
    loaded = [
        LoadedRuntime(
            name=r.name.removeprefix("registry.ollama.ai/").removeprefix("library/"),
            threads=r.threads,
            automatic_threads=r.runtime.num_thread <= 0,
            extra_buffers=bool(r.runtime.extra_buffers),
            flash_attention=r.runtime.flash_attention,
            kv_cache_type=kv_names.get(r.runtime.kv_cache_type, str(r.runtime.kv_cache_type)),
            gpu_layers=r.runtime.num_gpu_layers,
            parallel=r.runtime.num_parallel,
            weights_mapped=r.runtime.use_mmap is not False,
            huge_page_bytes=r.huge_page_bytes,
        )
        for r in loaded_runners
        if r.runtime is not None
    ]
    return InfoResponse(
        version=own_version,
        api_version=config.api_version(),
        library=build_info.library_version(),
        system_info=build_info.system_info(),
        backends=build_info.backends(),
        devices=[DeviceInfo(name=d.name, description=d.description, type=d.kind,
                            memory_free=d.memory_free, memory_total=d.memory_total)
                 for d in build_info.devices()],
        gpu_offload=supports_gpu_offload(),
        cpu=CpuInfo(model=build_info.cpu.model_name(), cores=threads.usable_cores(),
                    logical_cpus=len(threads.allowed_cpus()), cpu_quota=threads.cgroup_cpu_limit(),
                    features=features.compiled, features_missing=features.missing,
                    build_options=features.options),
        extra_buffers=ExtraBuffersInfo(enabled=decision.enabled, source=decision.source,
                                       verdict=decision.verdict, detail=decision.detail,
                                       types=list(decision.buffer_types)),
        threads=ThreadsInfo(setting="automatic", threads=choice.threads, cores=choice.cores,
                            busy_elsewhere=round(choice.busy_elsewhere, 2)),
        flash_attention="auto" if fa is None else ("on" if fa else "off"),
        kv_cache_type=config.kv_cache_type(),
        loaded=loaded,
    )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _extra_buffers_line(info: InfoResponse) -> str:
    eb = info.extra_buffers
    state = "on" if eb.enabled else "off"
    if eb.source == "OLLAMA_NB_EXTRA_BUFFERS":
        return f"{state} (forced by {eb.detail})"
    when = "probed now" if eb.source == "probe" else "cached verdict"
    return f"{state} (probe: {eb.verdict}, {eb.detail}; {when})"


def format_info(info: InfoResponse) -> str:
    gpus = [d for d in info.devices if d.type in ("gpu", "igpu")]
    cpu = info.cpu
    quota = f"; cgroup quota {cpu.cpu_quota:g} CPUs" if cpu.cpu_quota is not None else ""
    sections: list[tuple[str, list[tuple[str, str]]]] = [
        ("Runtime", [
            ("ollama-nb", f"{info.version} (Ollama API {info.api_version})"),
            ("llama.cpp", info.library),
            ("backends", ", ".join(info.backends) or "none"),
            ("GPU offload", "yes" if info.gpu_offload and gpus else
             ("build can offload, but no GPU is visible" if info.gpu_offload else "no (a CPU-only build)")),
        ]),
        ("Devices", [(d.name, f"{d.description}, {_gib(d.memory_free)} free of {_gib(d.memory_total)}"
                      if d.memory_total else d.description) for d in info.devices]),
        ("CPU", [
            ("model", cpu.model or "unknown"),
            ("cores", f"{cpu.cores} usable ({cpu.logical_cpus} logical CPUs{quota})"),
            ("compiled in", " ".join(cpu.features) or "none"),
            ("build options", " ".join(cpu.build_options) or "none"),
            ("missing here", " ".join(cpu.features_missing) + " (this build will crash on this CPU)"
             if cpu.features_missing else "none"),
        ]),
        ("Extra buffer types", [
            ("state", _extra_buffers_line(info)),
            ("types seen", ", ".join(info.extra_buffers.types) or "none"),
        ]),
        ("Threads", [
            ("num_thread", (f"{info.threads.setting}: {info.threads.threads} now "
                            f"({info.threads.cores} cores, {info.threads.busy_elsewhere:.1f} busy elsewhere)")),
        ]),
        ("Settings", [
            ("flash attention", info.flash_attention),
            ("KV cache type", info.kv_cache_type),
        ]),
    ]
    if info.loaded:
        sections.append(("Loaded models", [
            (m.name, (f"{m.threads} threads ({'automatic' if m.automatic_threads else 'num_thread'}), "
                      f"extra buffers {'on' if m.extra_buffers else 'off'}, "
                      f"flash attention {'on' if m.flash_attention else 'off'}, {m.kv_cache_type} cache, "
                      f"{m.gpu_layers if m.gpu_layers >= 0 else 'all'} GPU layers, {m.parallel} parallel, "
                      f"weights {'mapped' if m.weights_mapped else 'read in'}, "
                      f"{m.huge_page_bytes >> 20} MiB in huge pages"))
            for m in info.loaded
        ]))
    out: list[str] = []
    for title, rows in sections:
        out.append(f"  {title}")
        out.extend(f"    {key:<20}{value}".rstrip() for key, value in rows)
        out.append("")
    return "\n".join(out).rstrip() + "\n"
