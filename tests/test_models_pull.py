"""`models pull` end to end against a local stand-in for the Hugging Face Hub (tests/_hf_hub_server.py,
reached through HF_ENDPOINT; weights redirect to a second, CDN origin as on the real hub).

What a new user meets: progress on stderr; a pull killed with SIGKILL halfway (model shard or DAC)
resumes with a Range request; every file of the model and of its DAC is verified before the model
counts as installed; the token never reaches the CDN; gated, private and offline cases say what to do
and leave no empty folder; a Hugging Face cache snapshot imports under its repository's name with its
DAC; a daemon then serves the pulled folder and names it."""
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
from _content import check_audio, check_sidecar  # noqa: E402
from _hf_hub_server import HubServer  # noqa: E402
from _progress import Watch  # noqa: E402

pytestmark = pytest.mark.timeout(1800)  # last resort: the waits inside follow progress

MODEL_REPO = "test-org/UniMoE-Audio-tiny"
GATED_REPO = "test-org/gated-model"
PRIVATE_REPO = "test-org/private-model"
DAC_REPO = "descript/dac_16khz"
NAME = "UniMoE-Audio-tiny"
SLOW_FILE = "model-00001-of-00002.safetensors"
TOKEN = "hf_test_reader_token"  # valid; may read the private repo, has not accepted the gated one's terms
GATED_READER = "hf_test_gated_reader"


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
    return {MODEL_REPO: model, DAC_REPO: dac, GATED_REPO: model, PRIVATE_REPO: model}


@pytest.fixture(scope="module")
def hub(repos):
    with HubServer(repos, private={PRIVATE_REPO}, gated={GATED_REPO},
                   tokens={TOKEN: {PRIVATE_REPO}, GATED_READER: {GATED_REPO}}) as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def base_env(home, hub, tmp_path_factory):
    env = make_env(home, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path_factory.mktemp("hf-home")),
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def env(base_env):
    """A user with a read token set (it must reach the hub, never the CDN)."""
    return {**base_env, "HF_TOKEN": TOKEN}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def models_dir(home: Path) -> Path:
    return home / "data" / "models"


def partial_bytes(folder: Path) -> int:
    done = [p.stat().st_size for p in folder.rglob("*.part")] if folder.is_dir() else []
    return max(done, default=0)


def kill_while_downloading(env: dict, args: list[str], folder: Path, what: str) -> int:
    """Start ``models pull ARGS``, SIGKILL it once a .part under ``folder`` has grown; the bytes it had."""
    proc = subprocess.Popen([*CLI, "models", "pull", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        Watch(extra=lambda: partial_bytes(folder)).wait(
            lambda: partial_bytes(folder) > 20_000 or proc.poll() is not None, what, 0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return partial_bytes(folder)


def ls_state(env: dict, name: str) -> dict:
    listed = cli(env, "models", "ls", "--json").ok().json()
    return next(m for m in listed["models"] if m["name"] == name)


def test_a_pull_killed_halfway_resumes_and_is_verified(env, hub, home, repos):
    dest = models_dir(home) / NAME
    hub.slow.add(SLOW_FILE)
    hub.pace = (16384, 0.02)
    killed_at = kill_while_downloading(env, [MODEL_REPO], dest, "the slow shard to be partly downloaded")
    assert 0 < killed_at < (repos[MODEL_REPO] / SLOW_FILE).stat().st_size
    assert not (dest / SLOW_FILE).exists()
    # not installed while the pull is unfinished: ls, check and the daemon's lookup agree
    mine = ls_state(env, NAME)
    assert mine["ok"] is False and any("did not finish" in p for p in mine["problems"]), mine
    assert cli(env, "models", "check", str(dest)).code == 2

    hub.slow.clear()
    hub.requests.clear()
    r = cli(env, "models", "pull", MODEL_REPO, timeout=600).ok()
    assert f"downloaded {NAME} -> {dest}: ok" in r.out
    # resumed: the slow shard was asked of the CDN from where the killed pull stopped, not from 0
    blob = sha(repos[MODEL_REPO] / SLOW_FILE)
    ranges = [s.range for s in hub.seen("cdn") if s.method == "GET" and s.path.endswith(blob)]
    assert ranges and all(rng and int(rng.split("=")[1].split("-")[0]) > 0 for rng in ranges), ranges
    # progress shown on stderr, verification announced
    n_files = len([p for p in repos[MODEL_REPO].iterdir() if p.is_file()])
    assert f"{SLOW_FILE}: 100% of" in r.err and f"verified {n_files} of {n_files} file(s)" in r.err, r.err
    # every file is the hub's, byte for byte; the DAC came from its own repository into <model>/dac
    for p in repos[MODEL_REPO].iterdir():
        assert sha(dest / p.name) == sha(p), p.name
    for p in repos[DAC_REPO].iterdir():
        assert sha(dest / "dac" / p.name) == sha(p), p.name
    assert any(s.path.startswith(f"/{DAC_REPO}/resolve/") for s in hub.seen("hub"))
    assert ls_state(env, NAME)["ok"] is True


def test_the_token_goes_to_the_hub_and_never_to_the_cdn(env, hub, home):
    hub.requests.clear()
    cli(env, "models", "pull", MODEL_REPO, "--name", "token-check", timeout=600).ok()
    hub_seen, cdn_seen = hub.seen("hub"), hub.seen("cdn")
    assert cdn_seen, "the weights were not fetched through the CDN redirect"
    assert all(s.authorization is None for s in cdn_seen), [s for s in cdn_seen if s.authorization]
    assert hub_seen and all(s.authorization == f"Bearer {TOKEN}" for s in hub_seen)


def test_a_killed_dac_download_is_fetched_by_the_next_pull(env, hub, home, repos):
    dest = models_dir(home) / "dac-killed"
    hub.slow.add("model.safetensors")  # the DAC's weights (the model's are in shards)
    hub.pace = (2048, 0.05)
    try:
        kill_while_downloading(env, [MODEL_REPO, "--name", "dac-killed"], dest / "dac",
                               "the DAC weights to be partly downloaded")
    finally:
        hub.slow.clear()
        hub.pace = (16384, 0.02)
    assert (dest / "dac" / "config.json").is_file() and not (dest / "dac" / "model.safetensors").exists()
    mine = ls_state(env, "dac-killed")
    assert mine["ok"] is False, mine
    assert any("did not finish" in p for p in mine["problems"]) and any("DAC" in p for p in mine["problems"])
    r = cli(env, "models", "pull", MODEL_REPO, "--name", "dac-killed", timeout=600).ok()
    assert "ok" in r.out
    assert sha(dest / "dac" / "model.safetensors") == sha(repos[DAC_REPO] / "model.safetensors")
    assert ls_state(env, "dac-killed")["ok"] is True

    # a corrupted DAC file is refused, removed, and the next pull fetches it
    hub.corrupt.add("model.safetensors")
    try:
        (dest / "dac" / "model.safetensors").unlink()
        r = cli(env, "models", "pull", MODEL_REPO, "--name", "dac-killed", timeout=600)
    finally:
        hub.corrupt.clear()
    assert r.code == 2 and "model.safetensors" in r.err and "run again to fetch them" in r.err, r.err
    assert ls_state(env, "dac-killed")["ok"] is False
    cli(env, "models", "pull", MODEL_REPO, "--name", "dac-killed", timeout=600).ok()
    assert ls_state(env, "dac-killed")["ok"] is True


@pytest.mark.parametrize("bad", ["vocab.json", "tokenizer_config.json"])
def test_a_corrupted_small_file_is_refused_and_the_model_is_not_installed(env, hub, home, bad):
    name = f"corrupt-{bad.split('.')[0]}"
    dest = models_dir(home) / name
    hub.corrupt.add(bad)
    try:
        r = cli(env, "models", "pull", MODEL_REPO, "--name", name, timeout=600)
    finally:
        hub.corrupt.clear()
    assert r.code == 2, (r.code, r.err)
    assert bad in r.err and "differs from the hub's" in r.err and "run again to resume" not in r.err
    assert not (dest / bad).exists()  # removed, so the next pull fetches it again
    assert ls_state(env, name)["ok"] is False  # "ok" would be a lie: loading needs the file
    assert cli(env, "models", "check", str(dest)).code == 2
    cli(env, "models", "pull", MODEL_REPO, "--name", name, timeout=600).ok()
    assert (dest / bad).is_file() and ls_state(env, name)["ok"] is True


def test_a_gated_repository_says_so_and_names_the_fix(base_env, env, hub, home):
    dest = models_dir(home) / "gated-model"
    r = cli(base_env, "models", "pull", GATED_REPO, timeout=600)  # no token at all
    assert r.code == 2, r.err
    assert "gated repository" in r.err and "HF_TOKEN" in r.err and "run again to resume" not in r.err, r.err
    assert not dest.exists()  # no empty folder left behind
    r = cli(env, "models", "pull", GATED_REPO, timeout=600)  # a valid token, terms not accepted
    assert r.code == 2 and "gated repository" in r.err and "has no access" in r.err, r.err
    assert not dest.exists()
    cli({**base_env, "HF_TOKEN": GATED_READER}, "models", "pull", GATED_REPO, timeout=600).ok()
    assert ls_state(env, "gated-model")["ok"] is True


def test_a_private_or_missing_repository_names_the_fix(base_env, env, home):
    r = cli(base_env, "models", "pull", PRIVATE_REPO, timeout=600)
    assert r.code == 2 and "private" in r.err and "HF_TOKEN" in r.err and "run again to resume" not in r.err, r.err
    assert not (models_dir(home) / "private-model").exists()
    r = cli(env, "models", "pull", "test-org/no-such-model", timeout=600)
    assert r.code == 2 and "not found" in r.err and "run again to resume" not in r.err, r.err
    assert not (models_dir(home) / "no-such-model").exists()
    cli(env, "models", "pull", PRIVATE_REPO, timeout=600).ok()  # the token that may read it


def test_offline_says_whether_the_model_is_installed(env, home):
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    cli(env, "models", "pull", MODEL_REPO, timeout=600).ok()  # installed (idempotent)
    r = cli(offline, "models", "pull", MODEL_REPO, timeout=600).ok()
    assert "already installed" in r.err and "offline" in r.out and "ok" in r.out, (r.out, r.err)
    r = cli(offline, "models", "pull", "test-org/other-model", timeout=600)
    assert r.code == 2 and "HF_HUB_OFFLINE" in r.err and "is not installed" in r.err, r.err
    assert "run again to resume" not in r.err and not (models_dir(home) / "other-model").exists()


def _snapshot_download(env: dict, repo: str, cache: Path) -> Path:
    code = ("import sys, huggingface_hub as h; "
            "print(h.snapshot_download(sys.argv[1], cache_dir=sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, repo, str(cache)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


def test_the_stand_in_is_what_huggingface_hub_downloads(env, hub, repos, tmp_path):
    """The stand-in is faithful: huggingface_hub's own snapshot_download fetches it byte-identical,
    following the CDN redirect."""
    hub.requests.clear()
    snap = _snapshot_download(env, MODEL_REPO, tmp_path / "hf-cache")
    for p in repos[MODEL_REPO].iterdir():
        assert sha(snap / p.name) == sha(p), p.name
    assert hub.seen("cdn") and all(s.authorization is None for s in hub.seen("cdn"))


def test_import_of_a_hugging_face_cache_snapshot(env, home, repos, tmp_path):
    snap = _snapshot_download(env, MODEL_REPO, tmp_path / "hf-cache")
    assert snap.parent.name == "snapshots" and any(p.is_symlink() for p in snap.iterdir())
    r = cli(env, "models", "import", str(snap), "--name", "snap-nodac")
    assert r.code == 2 and "no DAC" in r.err and "--dac descript/dac_16khz" in r.err, r.err
    assert not (models_dir(home) / "snap-nodac").exists()
    r = cli(env, "models", "import", str(snap), "--dac", DAC_REPO, "--force", timeout=600).ok()
    dest = models_dir(home) / NAME  # named after the repository, not the commit
    assert f"imported {NAME} -> {dest}" in r.out, r.out
    assert not any(p.is_symlink() for p in dest.rglob("*"))  # the blobs' symlinks became files
    assert sha(dest / "dac" / "model.safetensors") == sha(repos[DAC_REPO] / "model.safetensors")
    assert ls_state(env, NAME)["ok"] is True
    # a DAC folder one already has works as well
    cli(env, "models", "import", str(snap), "--name", "snap-local-dac", "--dac", str(dest / "dac")).ok()
    assert ls_state(env, "snap-local-dac")["ok"] is True


def test_the_daemon_serves_the_pulled_model_and_names_it(env, home):
    cli(env, "models", "pull", MODEL_REPO, timeout=600).ok()
    d = Daemon(home, UNIMOE_AUDIO_MODEL=NAME, HF_HUB_OFFLINE="1")
    try:
        st = cli(d.env, "status", "--json").ok().json()
        folder = (models_dir(home) / NAME).resolve()
        # before the first load: the folder that will serve is named already
        assert Path(st["model_dir"]) == folder, st
        out = home / "pulled.wav"
        r = cli(d.env, "music", "calm piano", "--seconds", "0.5", "-o", str(out)).ok()
        check_audio(out, seconds=0.5)
        assert check_sidecar(out, task="music")["model"]["name"] == NAME  # made by the pulled model
        st = cli(d.env, "status", "--json").ok().json()
        # The stand-in hub serves a make-tiny model, whose config flags random weights: tiny, but not the
        # built-in fallback, and the advice is not to pull (that was just done).
        assert st["model"] == NAME and st["tiny"] is True and st["tiny_builtin"] is False
        assert Path(st["model_dir"]) == folder
        for text in (r.err, cli(d.env, "status").ok().err):
            assert "random weights from" in text and str(folder) in text, text
            assert "built-in TINY" not in text and "models pull" not in text, text
    finally:
        d.stop()


def test_an_unfinished_pull_is_not_served(env, home, hub):
    """A folder whose pull did not finish is not a model: the daemon says so and serves the fallback."""
    dest = models_dir(home) / "unfinished"
    hub.slow.add(SLOW_FILE)
    hub.pace = (16384, 0.02)
    try:
        kill_while_downloading(env, [MODEL_REPO, "--name", "unfinished"], dest, "a shard to be partly downloaded")
    finally:
        hub.slow.clear()
    d = Daemon(home, UNIMOE_AUDIO_MODEL="unfinished", HF_HUB_OFFLINE="1")
    try:
        st = cli(d.env, "status", "--json").ok().json()
        assert st["tiny"] is True and st["tiny_builtin"] is True
        assert "did not finish" in st["tiny_reason"] and "models pull" in st["tiny_reason"], st
    finally:
        d.stop()
