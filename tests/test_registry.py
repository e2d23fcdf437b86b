"""Pulls from the Ollama registry protocol, against a local registry that speaks it byte for
byte (``registry_fixture``) and misbehaves on demand. No test reaches the internet; none
asserts a timing (the fixture's byte and request counters say what happened)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from ollama_nb.api.types import ProgressResponse
from ollama_nb.base.errors import (
    ModelNotFound,
    PullDigestMismatch,
    RegistryError,
    RegistryUnauthorized,
    RegistryUnreachable,
)
from ollama_nb.models.store import Store
from ollama_nb.registry import pull_model, push_model

from .conftest import SMOLLM
from .registry_fixture import (
    MODEL_TYPE,
    Blob,
    RegistryFixture,
    clean_env,
    free_port,
    synthetic_model,
    wait_until,
)

MiB = 1 << 20
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _pull_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:  # a proxy from the machine would capture 127.0.0.1
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OLLAMA_NB_PULL_PART_SIZE", str(MiB))
    monkeypatch.setenv("OLLAMA_NB_PULL_BACKOFF", "0.01")
    monkeypatch.setenv("OLLAMA_NB_PULL_STALL_TIMEOUT", "5")


@pytest.fixture
def registry() -> RegistryFixture:
    fx = RegistryFixture().start()
    yield fx
    fx.stop()


@pytest.fixture
def synth(registry: RegistryFixture) -> tuple[str, bytes, Blob]:
    """A 3 MiB random model, ``<host>/library/synth:latest`` (3 ranged parts of 1 MiB)."""
    raw, blob = synthetic_model(registry, "library/synth", 3 * MiB)
    return f"{registry.host}/library/synth:latest", raw, blob


def pull(name: str, *, store: Store | None = None, insecure: bool = True) -> list[ProgressResponse]:
    return list(pull_model(store or Store(), name, insecure=insecure))


def files_under(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file of a store with its inode, size and mtime: 'the store is exactly as it was'."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (st.st_ino, st.st_size, st.st_mtime_ns)
            for p in sorted(root.rglob("*")) if (st := p.stat()) and p.is_file()}


def partials(store: Store) -> list[str]:
    return sorted(p.name for p in store.blobs_dir.glob("*partial*")) if store.blobs_dir.exists() else []


def collapse(events: list[ProgressResponse]) -> list[str]:
    return collapse_statuses([ev.status for ev in events])


def collapse_statuses(statuses: list[str]) -> list[str]:
    out: list[str] = []
    for status in statuses:
        if not out or out[-1] != status:
            out.append(status)
    return out


# -- happy paths -------------------------------------------------------------------------------


def test_progress_sequence_and_store_match_ollama(registry, synth):
    name, raw, _model = synth
    store = Store()
    events = pull(name, store=store)
    manifest = json.loads(raw)
    order = [layer["digest"] for layer in manifest["layers"]] + [manifest["config"]["digest"]]
    assert collapse(events) == (["pulling manifest"] + [f"pulling {d[7:19]}" for d in order]
                                + ["verifying sha256 digest", "writing manifest", "success"])
    sizes = {layer["digest"]: layer["size"] for layer in manifest["layers"] + [manifest["config"]]}
    for digest in order:
        series = [ev for ev in events if ev.digest == digest]
        assert all(ev.total == sizes[digest] for ev in series)
        done = [ev.completed for ev in series]
        assert done == sorted(done) and done[-1] == sizes[digest]
    # the manifest is stored byte for byte, under Ollama's layout, and every blob is verified
    assert (store.root / f"manifests/{registry.host}/library/synth/latest").read_bytes() == raw
    for digest in order:
        assert store.verify_blob(digest) == sizes[digest]
    assert partials(store) == []
    first = registry.requests[0]
    assert first.path == "/v2/library/synth/manifests/latest"
    assert first.accept == "application/vnd.docker.distribution.manifest.v2+json"


def test_blobs_already_in_the_store_are_skipped(registry, synth):
    name, _raw, model = synth
    store = Store()
    pull(name, store=store)
    registry.reset_counters()
    again = pull(name, store=store)
    assert sum(registry.sent.values()) == 0  # only the manifest was fetched
    assert [r.path for r in registry.requests] == ["/v2/library/synth/manifests/latest"]
    pulling = [ev for ev in again if ev.status.startswith("pulling ") and ev.digest]
    assert len(pulling) == 3 and all(ev.completed == ev.total for ev in pulling)
    assert again[-1].status == "success"

    # losing one blob costs exactly that blob
    store.blob_path(model.digest).unlink()
    registry.reset_counters()
    pull(name, store=store)
    assert dict(registry.sent) == {model.digest: model.size}


def test_large_blob_is_fetched_in_parallel_ranged_parts(registry, synth):
    name, _raw, model = synth
    registry.faults.barrier = 2  # a part waits (up to 5 s) for a second one to be in flight
    pull(name)
    ranges = sorted(r.range for r in registry.blob_requests(model.digest))
    assert ranges == [f"bytes={i * MiB}-{(i + 1) * MiB - 1}" for i in range(3)]
    assert registry.max_inflight >= 2
    assert registry.sent[model.digest] == model.size  # every byte exactly once


def test_concurrent_pulls_download_each_blob_once(registry, synth):
    name, _raw, model = synth
    hold = registry.faults.hold = threading.Event()
    results: list[list[ProgressResponse]] = [[], []]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for ev in pull_model(Store(), name, insecure=True):
                results[i].append(ev)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    # both pulls are waiting on the model blob before any byte of it is sent
    assert wait_until(lambda: all(any(ev.digest == model.digest for ev in r) for r in results))
    hold.set()
    for t in threads:
        t.join(60)
    assert not errors and all(r[-1].status == "success" for r in results)
    for digest, size in ((model.digest, model.size),):
        assert registry.sent[digest] == size
    assert len(registry.blob_requests(model.digest)) == 3  # three parts, once


def test_abandoned_pull_stops_its_downloads(registry, synth):
    name, _raw, model = synth
    hold = registry.faults.hold = threading.Event()
    store = Store()
    events = pull_model(store, name, insecure=True)
    for ev in events:
        if ev.digest == model.digest:
            break
    assert wait_until(lambda: registry.inflight == 3)
    events.close()  # the client went away (a closed HTTP stream, Ctrl-C, a Stop button)
    assert wait_until(lambda: registry.inflight == 0)  # its connections were dropped
    assert partials(store) == [] and not (store.root / "manifests").exists()
    hold.set()
    assert pull(name, store=store)[-1].status == "success"


def test_async_face(registry, synth):
    import asyncio

    from ollama_nb.registry import apull_model

    async def main() -> list[str]:
        return [ev.status async for ev in apull_model(Store(), synth[0], insecure=True)]

    assert collapse_statuses(asyncio.run(main()))[-3:] == [
        "verifying sha256 digest", "writing manifest", "success"]


def test_pull_over_cdn_redirect(registry, synth):
    name, _raw, model = synth
    registry.faults.cdn = True
    store = Store()
    assert pull(name, store=store)[-1].status == "success"
    cdn = [r for r in registry.requests if r.path.startswith("/cdn/")]
    assert cdn and all(r.host == f"localhost:{registry.port}" for r in cdn)
    assert store.verify_blob(model.digest) == model.size


def test_replacing_a_model_removes_unused_layers(registry, synth):
    name, _raw, old = synth
    store = Store()
    pull(name, store=store)
    _raw2, new = synthetic_model(registry, "library/synth", 2 * MiB, seed=2)
    events = pull(name, store=store)
    assert collapse(events)[-3:] == ["writing manifest", "removing unused layers", "success"]
    assert not store.has_blob(old.digest) and store.has_blob(new.digest)


def test_resumes_a_partial_download_in_ollamas_format(registry, synth):
    """A ``-partial`` file with ``-partial-N`` part states (as real Ollama leaves them) is
    continued: only the missing parts are fetched."""
    name, _raw, model = synth
    store = Store()
    store.blobs_dir.mkdir(parents=True)
    data = model.read(0, model.size)
    partial = Path(f"{store.blob_path(model.digest)}-partial")
    partial.write_bytes(data[:MiB] + bytes(model.size - MiB))  # part 0 done, the rest sparse
    for n in range(3):
        state = {"N": n, "Offset": n * MiB, "Size": MiB, "Completed": MiB if n == 0 else 0}
        Path(f"{partial}-{n}").write_text(json.dumps(state) + "\n")
    pull(name, store=store)
    assert registry.sent[model.digest] == 2 * MiB
    assert sorted(r.range for r in registry.blob_requests(model.digest)) == [
        f"bytes={MiB}-{2 * MiB - 1}", f"bytes={2 * MiB}-{3 * MiB - 1}"]
    assert store.verify_blob(model.digest) == model.size and partials(store) == []


def test_unreadable_part_state_starts_over(registry, synth):
    name, _raw, model = synth
    store = Store()
    store.blobs_dir.mkdir(parents=True)
    partial = Path(f"{store.blob_path(model.digest)}-partial")
    partial.write_bytes(b"garbage")
    Path(f"{partial}-0").write_text("{not json")
    pull(name, store=store)
    assert registry.sent[model.digest] == model.size
    assert store.verify_blob(model.digest) == model.size and partials(store) == []


# -- faults: retried, resumed, or a clear error; never a half-written blob or manifest ---------


def test_truncated_response_is_resumed_not_restarted(registry, monkeypatch, synth):
    name, _raw, model = synth
    monkeypatch.setenv("OLLAMA_NB_PULL_PART_SIZE", str(8 * MiB))  # one part: resume is visible
    registry.faults.truncate_once[model.digest] = 0.5
    store = Store()
    pull(name, store=store)
    gets = registry.blob_requests(model.digest)
    assert len(gets) == 2 and gets[0].range == f"bytes=0-{model.size - 1}"
    assert not gets[1].range.startswith("bytes=0-")  # continued where the first stopped
    assert registry.sent[model.digest] < 1.25 * model.size
    assert store.verify_blob(model.digest) == model.size


def test_transient_server_errors_are_retried(registry, synth):
    name, _raw, model = synth
    registry.faults.fail_status[model.digest] = [503, 500, 502]
    store = Store()
    assert pull(name, store=store)[-1].status == "success"
    assert store.verify_blob(model.digest) == model.size


def test_connection_resets_end_in_max_retries_then_resume(registry, monkeypatch, synth):
    name, _raw, model = synth
    monkeypatch.setenv("OLLAMA_NB_PULL_RETRIES", "3")
    registry.faults.truncate_once[model.digest] = 0.5  # half of part 0 arrives first
    registry.faults.reset.add(model.digest)  # ... then every connection drops at once
    store = Store()
    with pytest.raises(RegistryError) as err:
        pull(name, store=store)
    assert str(err.value).startswith("max retries exceeded: ")
    assert not store.blob_path(model.digest).exists()
    assert not store.manifest_path(store.resolve(name)).exists()
    partial = Path(f"{store.blob_path(model.digest)}-partial")
    states = [json.loads(Path(f"{partial}-{n}").read_text()) for n in range(3)]
    kept = sum(s["Completed"] for s in states)
    assert partial.is_file() and 0 < kept <= MiB // 2  # the bytes that arrived are kept

    registry.faults.reset.clear()
    registry.reset_counters()
    pull(name, store=store)
    assert registry.sent[model.digest] == model.size - kept  # only what was missing
    assert store.verify_blob(model.digest) == model.size and partials(store) == []


def test_stalling_server_is_retried_then_a_clear_error(registry, monkeypatch, synth):
    name, _raw, model = synth
    monkeypatch.setenv("OLLAMA_NB_PULL_STALL_TIMEOUT", "0.3")
    monkeypatch.setenv("OLLAMA_NB_PULL_RETRIES", "2")
    registry.faults.stall[model.digest] = 0
    store = Store()
    with pytest.raises(RegistryError, match=r"^max retries exceeded: .*part stalled"):
        pull(name, store=store)
    tries = Counter(r.range for r in registry.blob_requests(model.digest))
    assert max(tries.values()) >= 2  # a stalled part was asked for again
    assert not store.blob_path(model.digest).exists()
    assert not store.manifest_path(store.resolve(name)).exists()


def test_digest_mismatch_discards_the_blob(registry, synth):
    name, _raw, model = synth
    registry.faults.corrupt.add(model.digest)
    store = Store()
    with pytest.raises(PullDigestMismatch) as err:
        pull(name, store=store)
    assert str(err.value).startswith(
        f"digest mismatch, file must be downloaded again: want {model.digest}, got sha256:")
    assert not store.blob_path(model.digest).exists()
    assert partials(store) == []
    assert not (store.root / "manifests").exists()


@pytest.mark.parametrize("bad", [
    "sha256:../../../../etc/passwd",
    "../" + "a" * 64,
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 64 + "/../../x",
])
def test_manifest_with_a_malformed_digest_touches_nothing(registry, bad):
    good = Blob.of(b"x" * 100)
    registry.faults.manifest_body = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": good.layer("application/vnd.docker.container.image.v1+json"),
        "layers": [{"mediaType": MODEL_TYPE, "digest": bad, "size": 10}],
    }).encode()
    store = Store()
    with pytest.raises(RegistryError, match="^pull model manifest: invalid digest format$"):
        pull(f"{registry.host}/library/evil")
    assert not store.root.exists()
    assert [r.path for r in registry.requests] == ["/v2/library/evil/manifests/latest"]


def test_oversized_manifest_is_refused(registry, synth):
    registry.faults.manifest_padding = 5 * MiB
    with pytest.raises(RegistryError, match="^pull model manifest: manifest is more than"):
        pull(synth[0])
    assert not Store().root.exists()


def test_redirect_loop_is_refused(registry, synth):
    registry.faults.redirect_loop = True
    store = Store()
    with pytest.raises(RegistryError, match="maximum redirects exceeded"):
        pull(synth[0], store=store)
    assert partials(store) == [] and not (store.root / "manifests").exists()
    assert len(registry.blob_requests(synth[2].digest)) <= 3 * 11


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,hello"])
def test_redirect_to_a_non_http_url_is_refused(registry, synth, target):
    registry.faults.redirect_to = target
    store = Store()
    with pytest.raises(RegistryError, match="refusing redirect to .*only http and https"):
        pull(synth[0], store=store)
    assert partials(store) == [] and not (store.root / "manifests").exists()


@pytest.mark.parametrize("fault", ["lie_size", "short_length"])
def test_lying_content_length_is_refused(registry, synth, fault):
    name, _raw, model = synth
    getattr(registry.faults, fault).add(model.digest)
    store = Store()
    with pytest.raises(RegistryError, match="^registry reports .* bytes for"):
        pull(name, store=store)
    assert not store.blob_path(model.digest).exists()
    assert partials(store) == [] and not (store.root / "manifests").exists()


def test_server_without_range_support(registry, synth):
    name, _raw, model = synth
    registry.faults.no_ranges = True
    store = Store()
    assert pull(name, store=store)[-1].status == "success"
    assert store.verify_blob(model.digest) == model.size


def test_manifest_errors_have_ollamas_texts(registry, synth):
    with pytest.raises(RegistryError, match="^pull model manifest: file does not exist$"):
        pull(f"{registry.host}/library/nope:latest")
    registry.faults.manifest_status = 500
    with pytest.raises(RegistryError, match="^pull model manifest: 500: registry is having a bad day$"):
        pull(synth[0])
    with pytest.raises(RegistryError, match="^insecure protocol http$"):
        pull(f"http://{registry.host}/library/synth", insecure=False)
    assert not Store().root.exists()


# -- offline and proxies -----------------------------------------------------------------------


def test_connection_refused_is_one_clear_line_and_store_untouched(shared_models):
    store = Store(shared_models)
    before = files_under(shared_models)
    port = free_port()
    with pytest.raises(RegistryUnreachable) as err:
        pull(f"127.0.0.1:{port}/library/x", store=store)
    assert str(err.value) == (f'pull model manifest: Get "http://127.0.0.1:{port}/v2/library/x/'
                              f'manifests/latest": dial tcp 127.0.0.1:{port}: connect: connection refused')
    human = err.value.for_humans()
    assert "\n" not in human and "proxy" in human and "smollm2:135m" in human
    assert files_under(shared_models) == before


def test_dns_failure_reads_like_ollama(monkeypatch):
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "registry.ollama.ai":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(RegistryUnreachable) as err:
        pull("x", insecure=False)
    assert str(err.value) == ('pull model manifest: Get "https://registry.ollama.ai/v2/library/x/'
                              'manifests/latest": dial tcp: lookup registry.ollama.ai: no such host')
    assert not Store().root.exists()


def test_http_proxy_from_the_environment_is_used(registry, monkeypatch):
    _raw, model = synthetic_model(registry, "library/viaproxy", 2 * MiB)
    monkeypatch.setenv("HTTP_PROXY", registry.url)  # the fixture answers proxy-form requests
    store = Store()
    events = pull("http://registry.example.invalid/library/viaproxy", store=store)
    assert events[-1].status == "success"
    assert {r.host for r in registry.requests} == {"registry.example.invalid"}
    assert store.verify_blob(model.digest) == model.size


def test_unreachable_proxy_is_reported(monkeypatch):
    port = free_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    with pytest.raises(RegistryUnreachable, match=r"proxyconnect tcp: dial tcp 127\.0\.0\.1:\d+: "
                                                  r"connect: connection refused"):
        pull("x", insecure=False)


# -- a killed process resumes ------------------------------------------------------------------

_CHILD = """
import sys
from ollama_nb.registry import pull_model
from ollama_nb.models.store import Store
for ev in pull_model(Store(), sys.argv[1], insecure=True):
    pass
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_pull_resumes_in_a_new_process(registry, tmp_path):
    _raw, model = synthetic_model(registry, "library/big", 16 * MiB)
    name = f"{registry.host}/library/big"
    registry.faults.throttle = 1 * MiB  # per response: 8 parts of 2 MiB take a few seconds
    env = clean_env({"OLLAMA_MODELS": str(Store().root), "OLLAMA_NB_PULL_PART_SIZE": str(2 * MiB)})
    child = subprocess.Popen([sys.executable, "-c", _CHILD, name], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: registry.sent[model.digest] >= 0.6 * model.size or child.poll() is not None)
        assert child.poll() is None, child.stderr.read().decode()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    store = Store()
    assert not store.blob_path(model.digest).exists()
    assert partials(store)  # the child left its partial and part states

    registry.faults.throttle = None
    registry.reset_counters()
    events = list(pull_model(store, name, insecure=True))
    assert events[-1].status == "success"
    assert 0 < registry.sent[model.digest] <= 0.9 * model.size  # resumed, not restarted
    assert store.verify_blob(model.digest) == model.size and partials(store) == []


# -- the real runtime, the CLI, push -----------------------------------------------------------


def test_pulled_model_loads_and_generates(registry, shared_models, monkeypatch):
    from ollama_nb.manager.core import ModelManager

    monkeypatch.setenv("OLLAMA_NB_PULL_PART_SIZE", str(32 * MiB))
    raw = registry.add_store_model(shared_models, SMOLLM, "library/tiny")
    name = f"{registry.host}/library/tiny:latest"
    manager = ModelManager(Store())
    try:
        assert [ev.status for ev in manager.pull(name, insecure=True)][-1] == "success"
        assert manager.store.read_manifest(name).to_bytes() == raw
        assert name in [m.name for m in manager.list().models]
        reply = manager.generate(model=name, prompt="Hi", stream=False,
                                 options={"num_predict": 4, "temperature": 0})
        assert reply.response.strip() and reply.eval_count > 0
    finally:
        manager.close()


def test_cli_pull_shows_progress_and_exits_0(registry, synth, tmp_path):
    name, raw, model = synth
    models = tmp_path / "cli-models"
    env = clean_env({"OLLAMA_MODELS": str(models)})
    done = subprocess.run([sys.executable, "-m", "ollama_nb.cli", "pull", "--insecure", name],
                          check=False, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert "verifying sha256 digest" in lines and "writing manifest" in lines
    assert any(line.startswith(f"pulling {model.digest[7:19]}") and "100%" in line for line in lines)
    assert (models / f"manifests/{registry.host}/library/synth/latest").read_bytes() == raw


def test_cli_pull_error_is_one_line(tmp_path):
    port = free_port()
    env = clean_env({"OLLAMA_MODELS": str(tmp_path / "m")})
    done = subprocess.run([sys.executable, "-m", "ollama_nb.cli", "pull", "--insecure",
                           f"127.0.0.1:{port}/library/x"], check=False, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "connection refused" in errors[0] and "HTTPS_PROXY" in errors[0]


# -- push ----------------------------------------------------------------------------------------


@pytest.fixture
def local(registry: RegistryFixture, synth: tuple[str, bytes, Blob], monkeypatch: pytest.MonkeyPatch
          ) -> tuple[Store, str, bytes]:
    """A store holding the synthetic model under a name on the registry's host (not yet there),
    with pushes cut into 1 MiB parts so each blob takes several PATCHes."""
    from ollama_nb.registry import push

    monkeypatch.setattr(push, "PART_SIZE", MiB)
    name, raw, _model = synth
    store = Store()
    pull(name, store=store)
    target = f"{registry.host}/me/pushed:v1"
    store.copy(name, target)
    registry.reset_counters()
    return store, target, raw


def push(store: Store, name: str) -> list[ProgressResponse]:
    return list(push_model(store, name, insecure=True))


def test_push_sends_each_blob_then_the_manifest_and_pulls_back_byte_for_byte(registry, local):
    store, name, raw = local
    events = push(store, name)
    manifest = json.loads(raw)
    order = [layer["digest"] for layer in manifest["layers"]] + [manifest["config"]["digest"]]
    assert collapse(events) == (["retrieving manifest"] + [f"pushing {d[7:19]}" for d in order]
                                + ["pushing manifest", "success"])
    for digest in order:
        done = [ev.completed for ev in events if ev.digest == digest]
        assert done == sorted(done) and done[-1] == store.verify_blob(digest)
    assert registry.manifests[("me", "pushed", "v1")] == raw  # the store's bytes, not re-encoded
    # the protocol: HEAD, POST an upload, PATCH its parts with their ranges, PUT with the digest
    model = manifest["layers"][0]
    calls = [(r.method, r.path.rsplit("/", 2)[-2]) for r in registry.requests]
    assert calls[:2] == [("HEAD", "blobs"), ("POST", "uploads")]
    assert calls.count(("PATCH", "uploads")) >= model["size"] // MiB  # several parts for the model
    assert registry.requests[-1].method == "PUT" and registry.requests[-1].path == "/v2/me/pushed/manifests/v1"
    assert registry.uploads_in_progress() == 0

    back = Store(store.root.parent / "pulled-back")
    pull(name, store=back)
    assert back.read_manifest(name).to_bytes() == raw
    for digest in order:
        assert back.blob_path(digest).read_bytes() == store.blob_path(digest).read_bytes()


def test_blobs_the_registry_has_are_not_sent_again(registry, local):
    store, name, _raw = local
    push(store, name)
    registry.reset_counters()
    again = push(store, name)
    assert {r.method for r in registry.requests} == {"HEAD", "PUT"}  # no upload at all
    assert all(ev.completed == ev.total for ev in again if ev.digest)
    assert again[-1].status == "success"


def test_an_interrupted_push_leaves_no_manifest_and_the_next_one_completes(registry, local):
    store, name, raw = local
    registry.faults.drop_patches = 1
    with pytest.raises(RegistryError) as err:
        push(store, name)
    assert err.value.message.startswith("push model: ")
    assert ("me", "pushed", "v1") not in registry.manifests  # no half model to pull
    model = json.loads(raw)["layers"][0]["digest"]
    assert model not in registry.repo_blobs.get(("me", "pushed"), set())  # the cut blob was not kept
    assert push(store, name)[-1].status == "success"  # a fresh upload session, cleanly
    assert registry.manifests[("me", "pushed", "v1")] == raw
    assert model in registry.repo_blobs[("me", "pushed")]


def test_a_registry_that_wants_credentials_gets_them_from_the_environment(registry, local, monkeypatch):
    store, name, raw = local
    registry.faults.push_token = "s3cret"
    with pytest.raises(RegistryUnauthorized) as err:
        push(store, name)
    assert err.value.message == "push model: 401: unauthorized"  # a HEAD answer has no body to quote
    assert "no credentials were sent" in err.value.hint and "OLLAMA_NB_REGISTRY_TOKEN" in err.value.hint
    monkeypatch.setenv("OLLAMA_NB_REGISTRY_TOKEN", "wrong")
    with pytest.raises(RegistryUnauthorized, match="401") as err:
        push(store, name)
    assert "refused" in err.value.hint
    monkeypatch.setenv("OLLAMA_NB_REGISTRY_TOKEN", "s3cret")
    assert push(store, name)[-1].status == "success"
    assert registry.manifests[("me", "pushed", "v1")] == raw


def test_a_push_never_leaves_the_host_the_name_names(registry, local):
    store, name, _raw = local
    registry.faults.upload_elsewhere = f"localhost:{registry.port}"
    with pytest.raises(RegistryError, match="asked to upload to localhost"):
        push(store, name)
    assert all(r.host == registry.host for r in registry.requests)


def test_the_ollama_library_and_unknown_models_are_refused_before_any_request(tmp_path):
    store = Store()
    with pytest.raises(ModelNotFound):
        push_model(store, "127.0.0.1:9/me/nothing:v1", insecure=True).__next__()
    with pytest.raises(RegistryUnauthorized, match="needs your ollama.com key") as err:
        next(push_model(store, "me/model:v1"))
    assert "ollama-nb cp" in err.value.hint
    done = subprocess.run([sys.executable, "-m", "ollama_nb.cli", "push", "x"], check=False, capture_output=True,
                          text=True, timeout=120, env=clean_env({"OLLAMA_MODELS": str(tmp_path / "m")}))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "needs your ollama.com key" in done.stderr


def test_cli_push_shows_progress_and_exits_0(registry, local):
    store, name, raw = local
    env = clean_env({"OLLAMA_MODELS": str(store.root)})
    done = subprocess.run([sys.executable, "-m", "ollama_nb.cli", "push", "--insecure", name],
                          check=False, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[0] == "retrieving manifest" and lines[-1] == "success" and "pushing manifest" in lines
    assert registry.manifests[("me", "pushed", "v1")] == raw
