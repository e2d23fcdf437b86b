"""``info`` as a person reads it: the same sections in ``ollama-nb info`` and ``%ollama info``.

The data is :class:`~ollama_nb.api.types.InfoResponse`, the body of ``GET /api/info``; this
module only lays it out, in the two-column style of ``ollama show``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api.types import InfoResponse


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
                      f"{m.gpu_layers if m.gpu_layers >= 0 else 'all'} GPU layers, {m.parallel} parallel"))
            for m in info.loaded
        ]))
    out: list[str] = []
    for title, rows in sections:
        out.append(f"  {title}")
        out.extend(f"    {key:<20}{value}".rstrip() for key, value in rows)
        out.append("")
    return "\n".join(out).rstrip() + "\n"
