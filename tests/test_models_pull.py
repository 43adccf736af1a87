"""`models pull` end to end against a local stand-in for the Hugging Face Hub (tests/_hf_hub_server.py,
reached through HF_ENDPOINT): progress on stderr, a pull killed with SIGKILL halfway resumes with a
Range request, every file's size and hash is checked (a corrupted file is refused and removed), the
DAC codec comes from its own repository in the descript/dac_16khz layout, and a daemon then serves
the pulled model."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _client_harness import CLI, Daemon, cli, make_env  # noqa: E402
from _hf_hub_server import HubServer  # noqa: E402
from _progress import Watch  # noqa: E402

pytestmark = pytest.mark.timeout(1800)  # last resort: the waits inside follow progress

MODEL_REPO = "test-org/UniMoE-Audio-tiny"
NAME = "UniMoE-Audio-tiny"
SLOW_FILE = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    from unimoe_audio.model.codec import DacCodec
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    base = tmp_path_factory.mktemp("hub")
    tiny = Path(ensure_tiny_model(base / "tiny"))
    model = base / "model"
    model.mkdir()
    for p in tiny.iterdir():
        if p.is_file() and p.name not in ("README.txt", "tiny_bundle.json"):
            (model / p.name).write_bytes(p.read_bytes())
    dac = base / "dac"
    DacCodec.load(tiny / "dac").save_hf(dac)  # the descript/dac_16khz layout: config.json + model.safetensors
    (dac / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "DacFeatureExtractor", "feature_size": 1, "hop_length": 320,
         "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True, "sampling_rate": 16000}))
    return {MODEL_REPO: model, "descript/dac_16khz": dac}


@pytest.fixture(scope="module")
def hub(repos):
    with HubServer(repos) as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def env(home, hub, tmp_path_factory):
    return make_env(home, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path_factory.mktemp("hf-home")),
                    HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def models_dir(home: Path) -> Path:
    return home / "data" / "models"


def test_a_pull_killed_halfway_resumes_and_is_verified(env, hub, home, repos):
    dest = models_dir(home) / NAME
    hub.slow.add(SLOW_FILE)
    proc = subprocess.Popen([*CLI, "models", "pull", MODEL_REPO], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def partial_bytes() -> int:
            done = [p.stat().st_size for p in (dest / ".cache").rglob("*.part")] if dest.is_dir() else []
            return max(done, default=0)

        # the slow shard is being written (about 0.8 MB/s), well short of its 1.9 MB; the wait fails only
        # if the download stops growing for a long while
        Watch(extra=partial_bytes).wait(lambda: partial_bytes() > 200_000 or proc.poll() is not None,
                                        "the slow shard to be partly downloaded", 0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = partial_bytes()
    assert 0 < killed_at < (repos[MODEL_REPO] / SLOW_FILE).stat().st_size
    assert not (dest / SLOW_FILE).exists()

    hub.slow.clear()
    hub.requests.clear()
    r = cli(env, "models", "pull", MODEL_REPO, timeout=600).ok()
    assert f"downloaded {NAME} -> {dest}: ok" in r.out
    # resumed: the slow shard was asked for from where the killed pull stopped, not from 0
    ranges = [rng for method, path, rng in hub.requests if method == "GET" and path.endswith(SLOW_FILE)]
    assert ranges and all(rng and int(rng.split("=")[1].split("-")[0]) > 0 for rng in ranges), ranges
    # progress shown on stderr, verification announced
    assert f"{SLOW_FILE}: 100% of" in r.err and "verified 9 of 9 file(s)" in r.err, r.err
    # every file is the hub's, byte for byte; the DAC came from its own repository into <model>/dac
    for rel, src in [(p.name, p) for p in repos[MODEL_REPO].iterdir()]:
        assert sha(dest / rel) == sha(src), rel
    for p in repos["descript/dac_16khz"].iterdir():
        assert sha(dest / "dac" / p.name) == sha(p), p.name
    assert any(path.startswith("/descript/dac_16khz/resolve/") for _, path, _ in hub.requests)
    listed = cli(env, "models", "ls", "--json").ok().json()
    mine = next(m for m in listed["models"] if m["name"] == NAME)
    assert mine["ok"] is True


def test_a_corrupted_file_is_refused_removed_and_fetched_again(env, hub, home):
    dest = models_dir(home) / "corrupt-try"
    hub.corrupt.add("vocab.json")
    try:
        r = cli(env, "models", "pull", MODEL_REPO, "--name", "corrupt-try", timeout=600)
    finally:
        hub.corrupt.clear()
    assert r.code == 2, (r.code, r.err)
    assert "vocab.json" in r.err and "differs from the hub's" in r.err
    assert not (dest / "vocab.json").exists()  # removed, so the next pull fetches it again
    cli(env, "models", "pull", MODEL_REPO, "--name", "corrupt-try", timeout=600).ok()
    assert (dest / "vocab.json").is_file()


def test_the_daemon_serves_the_pulled_model(env, home):
    d = Daemon(home, UNIMOE_AUDIO_MODEL=NAME, HF_HUB_OFFLINE="1")
    try:
        out = home / "pulled.wav"
        cli(d.env, "music", "calm piano", "--seconds", "0.5", "-o", str(out)).ok()
        st = cli(d.env, "status", "--json").ok().json()
        # The pulled folder serves (not the built-in fallback); the stand-in hub serves a make-tiny model,
        # whose config flags random weights, so the daemon still says tiny.
        assert st["model"] == NAME and st["tiny"] is True
        assert Path(st["model_dir"]) == (models_dir(home) / NAME).resolve()
        assert out.is_file()
    finally:
        d.stop()
