"""``ollama create`` on the real bundled smollm2 GGUF: layers, inheritance, local files,
quantization with llama.cpp, LoRA adapters applied by llama.cpp, and clean failures."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest

from ollama_nb.api.types import Message
from ollama_nb.base.errors import CorruptModel, InvalidRequest, ModelfileError, ModelNotFound
from ollama_nb.manager.core import ModelManager
from ollama_nb.models import manifest as mf
from ollama_nb.models.gguf_meta import read_gguf_info
from ollama_nb.models.store import Store
from ollama_nb.prompt.building import conversation, render_chat

from .conftest import SMOLLM, model_file

CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
PIRATE = f'''FROM {SMOLLM}
TEMPLATE """{CHATML}"""
SYSTEM You are a pirate named Blackbeard.
PARAMETER stop <|im_end|>
PARAMETER temperature 0.3
PARAMETER num_ctx 1024
MESSAGE user Who are you?
MESSAGE assistant Arr, I be Blackbeard!
LICENSE """MIT License
Copyright the pirates"""
'''
GREEDY = {"temperature": 0, "seed": 0, "num_predict": 20}
_FINAL_BLOB = re.compile(r"sha256-[0-9a-f]{64}")


@pytest.fixture
def m(tmp_path: Path) -> Iterator[ModelManager]:
    manager = ModelManager(Store(tmp_path / "m"))
    for _ in manager.pull(SMOLLM):
        pass
    yield manager
    manager.close()


def create(m: ModelManager, name: str, text: str, base_dir: Path | None = None, **kw: object) -> list[str]:
    return [ev.status for ev in m.create(name, text, base_dir=str(base_dir) if base_dir else None, **kw)]


def base_model_layer(m: ModelManager) -> mf.Layer:
    return m.store.read_manifest(SMOLLM).model_layer  # type: ignore[attr-defined]


def layers_of(m: ModelManager, name: str) -> dict[str, list[mf.Layer]]:
    out: dict[str, list[mf.Layer]] = {}
    for layer in m.store.read_manifest(name).layers:
        out.setdefault(layer.mediaType, []).append(layer)
    return out


def greedy(m: ModelManager, name: str) -> str:
    res = m.generate(model=name, prompt="What is the capital of France?", options=GREEDY, stream=False)
    return res.response


def link_smollm(directory: Path, name: str = "model.gguf") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).symlink_to(model_file(SMOLLM))
    return directory / name


# ---- 1. a stored model + every instruction ------------------------------------------------


def test_create_from_stored_model_writes_layers_and_uses_them(m: ModelManager) -> None:
    statuses = create(m, "pirate", PIRATE)
    assert statuses[-2:] == ["writing manifest", "success"]
    base = base_model_layer(m)
    assert f"using existing layer {base.digest}" in statuses

    layers = layers_of(m, "pirate")
    manifest = m.store.read_manifest("pirate")
    assert manifest.layers[0].mediaType == mf.MEDIA_TYPE_MODEL
    assert sorted(layers) == sorted([mf.MEDIA_TYPE_MODEL, mf.MEDIA_TYPE_TEMPLATE, mf.MEDIA_TYPE_SYSTEM,
                                     mf.MEDIA_TYPE_PARAMS, mf.MEDIA_TYPE_MESSAGES, mf.MEDIA_TYPE_LICENSE])
    assert all(len(v) == 1 for v in layers.values())
    model = layers[mf.MEDIA_TYPE_MODEL][0]
    assert (model.digest, model.size) == (base.digest, base.size)
    raw = json.loads(m.store.manifest_path(m.store.resolve("pirate")).read_bytes())
    assert raw["layers"][0]["from"] == SMOLLM  # what a real Ollama reads as the parent

    text = {media: m.store.read_layer_text(v[0]) for media, v in layers.items() if media != mf.MEDIA_TYPE_MODEL}
    assert text[mf.MEDIA_TYPE_TEMPLATE] == CHATML
    assert text[mf.MEDIA_TYPE_SYSTEM] == "You are a pirate named Blackbeard."
    # merged over the base's params: its two stop strings are replaced, not extended
    assert m.spec(SMOLLM).params == {"stop": ["<|im_start|>", "<|im_end|>"]}
    assert json.loads(text[mf.MEDIA_TYPE_PARAMS]) == {"stop": ["<|im_end|>"], "temperature": 0.3, "num_ctx": 1024}
    assert json.loads(text[mf.MEDIA_TYPE_MESSAGES]) == [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "Arr, I be Blackbeard!"},
    ]
    assert text[mf.MEDIA_TYPE_LICENSE] == "MIT License\nCopyright the pirates"

    shown = m.show("pirate")
    assert shown.system == "You are a pirate named Blackbeard."
    assert shown.template == CHATML
    assert shown.license == "MIT License\nCopyright the pirates"
    assert sorted(shown.parameters.splitlines()) == sorted([
        f'{"stop":<30} "<|im_end|>"', f'{"temperature":<30} 0.3', f'{"num_ctx":<30} 1024',
    ])
    assert [(x.role, x.content) for x in shown.messages] == [
        ("user", "Who are you?"), ("assistant", "Arr, I be Blackbeard!"),
    ]
    assert shown.details.parent_model == SMOLLM
    assert shown.details.quantization_level == "Q4_1"
    assert 'SYSTEM You are a pirate named Blackbeard.' in shown.modelfile

    # the prompt llama.cpp is fed: Go template, Modelfile SYSTEM, then the MESSAGE turns
    spec = m.spec("pirate")
    runner = m._acquire(spec, m._options(spec, {}), 300)
    try:
        assert runner.engine.n_ctx == 1024  # PARAMETER num_ctx reached the load
        msgs = conversation(spec, [Message(role="user", content="Where is the treasure?")])
        prompt = runner.call(lambda: render_chat(runner.engine, spec, msgs))
        # without a system prompt the GGUF's Jinja template would add SmolLM's default one
        no_system = conversation(spec, [Message(role="user", content="Hi")], system="")
        bare = runner.call(lambda: render_chat(runner.engine, spec, no_system))
        tokens = runner.call(lambda: runner.engine.tokenize(prompt))
    finally:
        m.scheduler.release(runner)
    assert prompt == (
        "<|im_start|>system\nYou are a pirate named Blackbeard.<|im_end|>\n"
        "<|im_start|>user\nWho are you?<|im_end|>\n"
        "<|im_start|>assistant\nArr, I be Blackbeard!<|im_end|>\n"
        "<|im_start|>user\nWhere is the treasure?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert bare.startswith("<|im_start|>user\nWho are you?<|im_end|>\n")
    # chat first, on an empty KV cache, so every prompt token is evaluated
    chat = m.chat(model="pirate", messages=[{"role": "user", "content": "Where is the treasure?"}],
                  options={"num_predict": 4}, stream=False)
    assert chat.prompt_eval_count == len(tokens)
    gen = m.generate(model="pirate", prompt="Where is the treasure?", options={"num_predict": 4}, stream=False)
    assert gen.context[: len(tokens)] == tokens


def test_create_from_created_model_inherits_and_overrides(m: ModelManager) -> None:
    create(m, "pirate", PIRATE)
    create(m, "pirate2", "FROM pirate\nPARAMETER temperature 0.9\nSYSTEM Speak softly.")
    parent, child = layers_of(m, "pirate"), layers_of(m, "pirate2")
    for media in (mf.MEDIA_TYPE_TEMPLATE, mf.MEDIA_TYPE_MESSAGES, mf.MEDIA_TYPE_LICENSE):
        assert [x.digest for x in child[media]] == [x.digest for x in parent[media]]
    assert child[mf.MEDIA_TYPE_MODEL][0].from_ == "pirate:latest"
    spec = m.spec("pirate2")
    assert spec.system == "Speak softly."
    assert spec.params == {"stop": ["<|im_end|>"], "temperature": 0.9, "num_ctx": 1024}


# ---- 2. a local GGUF ----------------------------------------------------------------------


@pytest.mark.parametrize("from_", ["./model.gguf", "model.gguf", "./weights"])
def test_create_from_local_gguf_relative_to_modelfile(m: ModelManager, tmp_path: Path, from_: str) -> None:
    link_smollm(tmp_path / "weights" if from_ == "./weights" else tmp_path)
    assert Path.cwd() != tmp_path  # relative to base_dir, not to where Python runs
    before = set(os.listdir(m.store.blobs_dir))
    statuses = create(m, "local", f"FROM {from_}\nSYSTEM local", base_dir=tmp_path)
    base = base_model_layer(m)
    assert statuses[0] == "parsing GGUF"
    assert f"using existing layer {base.digest}" in statuses
    model = layers_of(m, "local")[mf.MEDIA_TYPE_MODEL]
    assert [(x.digest, x.size, x.from_) for x in model] == [(base.digest, base.size, None)]
    kept = {m.store.blob_path(d).name for d in m.store.read_manifest("local").digests()}
    assert set(os.listdir(m.store.blobs_dir)) == before | kept  # no copy of the weights, nothing else
    details = m.show("local").details
    assert (details.family, details.quantization_level, details.parent_model) == ("llama", "Q4_1", "")


# ---- 3. quantization ----------------------------------------------------------------------


def write_f16(src: Path, dst: Path) -> None:
    """The smollm2 weights dequantized to F16 (norms stay F32, as llama.cpp's converter writes)."""
    reader = gguf.GGUFReader(src)
    assert reader.endianess == gguf.GGUFEndian.LITTLE
    assert "general.alignment" not in reader.fields  # so the writer's default alignment fits
    writer = gguf.GGUFWriter(dst, arch=reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        writer.add_tensor(t.name, data.astype(np.float16 if data.ndim > 1 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_quantize_f16_to_q4_k_m(m: ModelManager, tmp_path: Path) -> None:
    f16 = tmp_path / "f16.gguf"
    write_f16(model_file(SMOLLM), f16)
    assert read_gguf_info(f16).file_type == "F16"
    try:
        statuses = create(m, "quant", "FROM ./f16.gguf", base_dir=tmp_path, quantize="q4_K_M")
    finally:
        f16.unlink()
    assert "quantizing F16 model to Q4_K_M" in statuses
    assert statuses[-1] == "success"
    assert m.show("quant").details.quantization_level == "Q4_K_M"
    weights = read_gguf_info(m.spec("quant").model_path)
    assert weights.file_type == "Q4_K_M"
    assert {t.type for t in weights.tensors} & {"Q4_K", "Q6_K"}
    assert [n for n in os.listdir(m.store.blobs_dir) if not _FINAL_BLOB.fullmatch(n)] == []
    res = m.generate(model="quant", prompt="Hello, my name is", options={"num_predict": 8, "temperature": 0},
                     stream=False)
    assert res.eval_count > 0 and res.response.strip()


# ---- 4. LoRA adapters ---------------------------------------------------------------------


def write_lora(path: Path, *, scale: float, rank: int = 4, arch: str = "llama") -> None:
    """A LoRA on every attn_q of SmolLM2 (576x576): lora_a is [n_embd, rank], lora_b [rank, n_out]
    in GGUF (ggml) order, i.e. numpy shapes (rank, 576) and (576, rank)."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for i in range(30):
        writer.add_tensor(f"blk.{i}.attn_q.weight.lora_a", rng.standard_normal((rank, 576)).astype(np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight.lora_b",
                          (scale * rng.standard_normal((576, rank))).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_adapter_is_stored_and_applied_by_llama_cpp(m: ModelManager, tmp_path: Path) -> None:
    write_lora(tmp_path / "lora.gguf", scale=1.0)
    write_lora(tmp_path / "zero.gguf", scale=0.0)
    create(m, "lora", f"FROM {SMOLLM}\nADAPTER ./lora.gguf", base_dir=tmp_path)
    create(m, "zero", f"FROM {SMOLLM}\nADAPTER ./zero.gguf", base_dir=tmp_path)
    layers = layers_of(m, "lora")
    adapter = layers[mf.MEDIA_TYPE_ADAPTER]
    assert len(adapter) == 1
    assert m.store.blob_path(adapter[0].digest).read_bytes() == (tmp_path / "lora.gguf").read_bytes()
    assert layers[mf.MEDIA_TYPE_MODEL][0].digest == base_model_layer(m).digest
    assert m.spec("lora").adapters == [str(m.store.blob_path(adapter[0].digest))]

    base = greedy(m, SMOLLM)
    assert base
    assert greedy(m, "lora") != base  # llama.cpp applied the adapter's weights
    assert greedy(m, "zero") == base  # ... and it is their values, not the loading path, that differ


def test_adapter_that_is_not_an_adapter_is_refused(m: ModelManager, tmp_path: Path) -> None:
    link_smollm(tmp_path)
    with expect_clean_failure(m, "bad"):
        with pytest.raises(InvalidRequest, match="is not a LoRA adapter"):
            create(m, "bad", f"FROM {SMOLLM}\nADAPTER ./model.gguf", base_dir=tmp_path)


# ---- 5. bad input -------------------------------------------------------------------------


class expect_clean_failure:  # noqa: N801 - reads as a context manager
    """Nothing of a failed create may remain: no manifest, no blob, no partial file."""

    def __init__(self, m: ModelManager, name: str) -> None:
        self.m, self.name = m, name

    def __enter__(self) -> None:
        self.before = set(os.listdir(self.m.store.blobs_dir))
        self.models = [x.name for x in self.m.list().models]

    def __exit__(self, *exc: object) -> None:
        assert not self.m.store.exists(self.name)
        assert [x.name for x in self.m.list().models] == self.models
        assert set(os.listdir(self.m.store.blobs_dir)) == self.before


@pytest.mark.parametrize(("text", "error", "match"), [
    ("SYSTEM hi\nPARAMETER temperature 0.1", ModelfileError, "no FROM line"),
    (f"FROM {SMOLLM}\nPARAMETER bogus 1", ModelfileError, "unknown parameter 'bogus'"),
    (f"FROM {SMOLLM}\nPARAMETER num_ctx lots", ModelfileError, r"invalid int value \[lots\]"),
    (f"FROM {SMOLLM}\nPARAMETER temperature hot", ModelfileError, r"invalid float value \[hot\]"),
    ("FROM nosuchmodel:7b\nSYSTEM hi", ModelNotFound, "nosuchmodel"),
    ("FROM ./missing.gguf", InvalidRequest, "does not exist"),
    ("FROM ./empty", InvalidRequest, "no GGUF file in"),
    ("FROM ./lora.gguf", InvalidRequest, "is a LoRA adapter"),
])
def test_bad_modelfiles_fail_cleanly(m: ModelManager, tmp_path: Path, text: str, error: type, match: str) -> None:
    (tmp_path / "empty").mkdir()
    write_lora(tmp_path / "lora.gguf", scale=1.0, rank=1)
    with expect_clean_failure(m, "target"):
        with pytest.raises(error, match=match):
            create(m, "target", text, base_dir=tmp_path)


@pytest.mark.parametrize(("keep", "match"), [
    (1 << 20, "header runs past"),  # cut inside the tokenizer arrays
    (4 << 20, "truncated"),  # header intact, tensor data cut off
    (0, "invalid file magic"),  # not a GGUF at all
])
def test_corrupt_gguf_fails_cleanly(m: ModelManager, tmp_path: Path, keep: int, match: str) -> None:
    bad = tmp_path / "bad.gguf"
    if keep:
        with open(model_file(SMOLLM), "rb") as f:
            bad.write_bytes(f.read(keep))
    else:
        bad.write_bytes(b"PK\x03\x04 definitely not a model" * 100)
    with expect_clean_failure(m, "broken"):
        with pytest.raises(CorruptModel, match=match):
            create(m, "broken", "FROM ./bad.gguf", base_dir=tmp_path)


@pytest.mark.parametrize(("quantize", "match"), [
    ("q4_K_M", r"only supported for F16 and F32 models \(this model is Q4_1\)"),
    ("q9_X", "unsupported quantization type q9_X"),
])
def test_quantize_refusals_fail_cleanly(m: ModelManager, quantize: str, match: str) -> None:
    with expect_clean_failure(m, "requant"):
        with pytest.raises(InvalidRequest, match=match):
            create(m, "requant", f"FROM {SMOLLM}", quantize=quantize)
