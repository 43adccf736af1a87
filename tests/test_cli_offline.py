"""CLI verbs that need no daemon: config, models (ls/import/check/rm), batch validation, exit codes 2 and 3."""
from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _client_harness import cli, make_env  # noqa: E402


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], truncate: int = 0) -> None:
    """A valid safetensors file without torch: JSON header + zero bytes."""
    width = {"F32": 4, "BF16": 2, "F16": 2}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = width[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + b"\0" * max(0, offset - truncate))


def make_checkpoint(root: Path, sharded: bool = False) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "uni_audio_rvq_qwen2_5vl_moe", "hidden_size": 8}))
    (root / "tokenizer_config.json").write_text("{}")
    # what "ok" asks beyond the weights (models_store.validate_model_dir): the tokenizer files the loader reads
    # and DAC weights (their presence: nothing here loads them)
    (root / "vocab.json").write_text("{}")
    (root / "merges.txt").write_text("#version: 0.2\n")
    (root / "dac").mkdir()
    (root / "dac" / "weights_16khz.pth").write_bytes(b"stand-in")
    if not sharded:
        write_safetensors(root / "model.safetensors", {"a.weight": ("BF16", [4, 8]), "b.bias": ("F32", [8])})
        return root
    write_safetensors(root / "model-00001-of-00002.safetensors", {"a.weight": ("BF16", [4, 8])})
    write_safetensors(root / "model-00002-of-00002.safetensors", {"b.bias": ("F32", [8])})
    index = {"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                            "b.bias": "model-00002-of-00002.safetensors"}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path / "home")


def test_config_json_lists_every_setting_with_its_env_var(env, tmp_path):
    env["UNIMOE_AUDIO_MAX_BATCH"] = "3"
    data = cli(env, "config", "--json").ok().json()
    rows = {r["name"]: r for r in data["settings"]}
    from unimoe_audio.client.settings import Settings

    assert set(rows) == set(Settings.model_fields)
    assert rows["max_batch"]["value"] == 3 and rows["max_batch"]["from_env"] is True
    assert rows["max_batch"]["env"] == "UNIMOE_AUDIO_MAX_BATCH"
    assert rows["model"]["from_env"] is False
    assert data["paths"]["connection_file"] == str(tmp_path / "home" / "run" / "daemon.json")
    human = cli(env, "config").ok().out
    assert "UNIMOE_AUDIO_MAX_BATCH" in human and "3 (env)" in human


def test_models_import_ls_rm_roundtrip(env, tmp_path):
    src = make_checkpoint(tmp_path / "ckpt", sharded=True)
    r = cli(env, "models", "import", str(src), "--name", "mine", "--json").ok().json()
    assert r["check"]["ok"] and r["check"]["shards"] == 2 and r["check"]["parameters"] == 40
    dest = tmp_path / "home" / "data" / "models" / "mine"
    # the imported copy is whole: its index maps every tensor to a shard that came along, byte for byte
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"a.weight": "model-00001-of-00002.safetensors",
                                   "b.bias": "model-00002-of-00002.safetensors"}
    for shard in set(index["weight_map"].values()):
        assert (dest / shard).read_bytes() == (src / shard).read_bytes(), shard
    listing = cli(env, "models", "ls", "--json").ok().json()
    names = {m["name"]: m for m in listing["models"]}
    assert names["mine"]["ok"] and names["tiny"]["builtin"]
    assert listing["installed"] is False  # the selected default model is not this one
    human = cli(env, "models", "ls").ok().out
    assert "mine" in human and "falls back to the built-in tiny model" in human
    # importing the same name again is refused without --force
    again = cli(env, "models", "import", str(src), "--name", "mine")
    assert again.code == 2 and "already exists" in again.err
    cli(env, "models", "import", str(src), "--name", "mine", "--force").ok()
    # selecting it makes it "installed"
    env2 = dict(env, UNIMOE_AUDIO_MODEL="mine")
    assert cli(env2, "models", "ls", "--json").ok().json()["installed"] is True
    cli(env, "models", "rm", "mine").ok()
    assert not dest.exists()
    assert cli(env, "models", "rm", "mine").code == 2


def test_models_import_link_keeps_the_source(env, tmp_path):
    src = make_checkpoint(tmp_path / "ckpt")
    cli(env, "models", "import", str(src), "--link").ok()
    dest = tmp_path / "home" / "data" / "models" / "ckpt"
    assert dest.is_symlink()
    cli(env, "models", "rm", "ckpt").ok()
    assert not dest.exists() and (src / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "damage, expect",
    [
        ("truncate", "truncated"),
        ("no_config", "config.json is missing"),
        ("bad_config", "config.json is not valid JSON"),
        ("missing_shard", "named by the index is missing"),
        ("index_lies", "lacks 1 tensor"),
        ("garbage", "safetensors header"),
    ],
)
def test_models_import_rejects_broken_checkpoints(env, tmp_path, damage, expect):
    root = make_checkpoint(tmp_path / "ckpt", sharded=damage in ("missing_shard", "index_lies"))
    if damage == "truncate":
        write_safetensors(root / "model.safetensors", {"a.weight": ("BF16", [4, 8])}, truncate=10)
    elif damage == "no_config":
        (root / "config.json").unlink()
    elif damage == "bad_config":
        (root / "config.json").write_text("{nope")
    elif damage == "missing_shard":
        (root / "model-00002-of-00002.safetensors").unlink()
    elif damage == "index_lies":
        idx = json.loads((root / "model.safetensors.index.json").read_text())
        idx["weight_map"]["c.weight"] = "model-00002-of-00002.safetensors"
        (root / "model.safetensors.index.json").write_text(json.dumps(idx))
    elif damage == "garbage":
        (root / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"xxxxx")
    r = cli(env, "models", "import", str(root))
    assert r.code == 2, r.err
    assert expect in r.err
    assert not (tmp_path / "home" / "data" / "models" / "ckpt").exists()
    chk = cli(env, "models", "check", str(root), "--json")
    assert chk.code == 2 and chk.json()["ok"] is False


def test_batch_dry_run_parses_reference_task_files(env, tmp_path):
    tasks = [
        {"task_type": "text_to_music", "task_id": "music_001", "caption": "A peaceful piano melody",
         "output_path": "./out/music", "seconds": 1},
        {"task_type": "text_to_speech", "task_id": "speech_001", "target_text": "Hello world",
         "reference_audio": "ref.wav", "reference_text": "Reference transcript", "output_path": "./out/s.wav"},
        {"task_type": "music", "caption": "drums", "variations": 2, "seed": 7},
    ]
    f = tmp_path / "tasks.json"
    f.write_text(json.dumps(tasks))
    data = cli(env, "batch", str(f), "--dry-run", "--json", "--output-dir", str(tmp_path / "o")).ok().json()
    assert [d["id"] for d in data] == ["music_001", "speech_001", "music_003-1", "music_003-2"]
    assert data[0]["output"] == str(tmp_path / "out" / "music" / "music_001.wav")
    assert data[1]["reference_audio"] == str(tmp_path / "ref.wav")
    assert data[1]["output"] == str(tmp_path / "out" / "s.wav")
    assert [d["seed"] for d in data[2:]] == [7, 8]
    assert data[2]["output"] == str(tmp_path / "o" / "music_003-1.wav")
    # the same in YAML
    y = tmp_path / "tasks.yaml"
    y.write_text("- {task_type: music, caption: calm, seconds: 1}\n- {task: score, video: v.mp4, in: 1, out: 2}\n")
    data = cli(env, "batch", str(y), "--dry-run", "--json").ok().json()
    assert data[1]["task"] == "score" and data[1]["in_seconds"] == 1 and data[1]["out_seconds"] == 2


@pytest.mark.parametrize(
    "content, expect",
    [
        ("[]", "empty"),
        ('{"a": 1}', "wanted a list"),
        ('[{"task_type": "dance", "caption": "x"}]', "unknown task_type"),
        ('[{"task_type": "music", "captoin": "x"}]', "unknown key 'captoin'"),
        ('[{"task_type": "music"}]', "missing 'caption'"),
        ('[{"task_type": "speech", "text": "hi"}]', "give 'voice'"),
        ('[{"task_type": "music", "caption": "x", "seconds": 9999}]', "seconds"),
        ('[{"task_type": "music", "caption": "a", "id": "x"}, {"task_type": "music", "caption": "b", "id": "x"}]',
         "repeats"),
        ("[{", "not valid JSON"),
    ],
)
def test_batch_rejects_bad_files_with_exit_2(env, tmp_path, content, expect):
    f = tmp_path / "bad.json"
    f.write_text(content)
    r = cli(env, "batch", str(f), "--no-start")
    assert r.code == 2, (r.code, r.err)
    assert expect in r.err


def test_bad_arguments_exit_2(env, tmp_path):
    assert cli(env, "music").code == 2  # argparse: missing caption
    r = cli(env, "music", "x", "--bars", "8", "--no-start")
    assert r.code == 2 and "--tempo" in r.err
    r = cli(env, "speak", "hello", "--no-start")
    assert r.code == 2 and "--voice" in r.err
    r = cli(env, "speak", "hello", "--ref-audio", str(tmp_path / "nope.wav"), "--ref-text", "x", "--no-start")
    assert r.code == 2 and "not found" in r.err
    r = cli(env, "score", str(tmp_path / "nope.mp4"), "--no-start")
    assert r.code == 2 and "not found" in r.err
    r = cli(env, "music", "x", "-o", str(tmp_path / "x.mp3"), "--no-start")
    assert r.code == 2 and ".wav" in r.err
    r = cli(env, "music", "x", "--loudness", "loud")
    assert r.code == 2 and "LUFS" in r.err


def test_no_daemon_and_no_start_exits_3(env):
    for args in (["status"], ["jobs", "ls"], ["voices", "ls"], ["music", "calm", "--seconds", "1"]):
        r = cli(env, *args, "--no-start")
        assert r.code == 3, (args, r.code, r.err)
        assert "no daemon is running" in r.err and "unimoe-audio serve" in r.err


def test_stale_connection_file_counts_as_no_daemon(env, tmp_path):
    run = tmp_path / "home" / "run"
    run.mkdir(parents=True, mode=0o700)
    f = run / "daemon.json"
    f.write_text(json.dumps({"request_port": 1, "control_port": 2, "events_port": 3, "key": "00" * 32,
                             "pid": 2**22 + 12345, "protocol_version": "1.0"}))
    os.chmod(f, 0o600)
    r = cli(env, "status", "--no-start")
    assert r.code == 3 and "no daemon is running" in r.err


def test_protocol_version_mismatch_exits_3_with_a_clear_message(env, tmp_path):
    run = tmp_path / "home" / "run"
    run.mkdir(parents=True, mode=0o700)
    f = run / "daemon.json"
    # a live pid (this test process) that claims protocol 2.0
    f.write_text(json.dumps({"request_port": 1, "control_port": 2, "events_port": 3, "key": "00" * 32,
                             "pid": os.getpid(), "protocol_version": "2.0"}))
    os.chmod(f, 0o600)
    r = cli(env, "status")
    assert r.code == 3, r.err
    assert "protocol" in r.err and "2.0" in r.err and "1.0" in r.err
    assert "starting one" not in r.err  # a mismatched daemon is not replaced behind the user's back


def test_models_pull_failure_is_reported_and_resumable(env, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on: the hub is unreachable
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli(dict(env, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_DISABLE_XET="1"),
            "models", "pull", "someone/not-a-real-repo", "--name", "x")
    assert r.code == 2, r.err
    # a network failure is one a rerun gets past, and nothing is left behind
    assert "download of someone/not-a-real-repo failed" in r.err and "run again to resume" in r.err, r.err
    assert not (tmp_path / "home" / "data" / "models" / "x").exists()
    r = cli(dict(env, HF_HUB_OFFLINE="1"), "models", "pull", "someone/not-a-real-repo", "--name", "x")
    assert r.code == 2 and "HF_HUB_OFFLINE is set" in r.err and "x is not installed" in r.err, r.err
    assert "run again to resume" not in r.err


def test_models_make_tiny_writes_a_valid_checkpoint(env, tmp_path):
    target = tmp_path / "tiny-ckpt"
    r = cli(env, "models", "make-tiny", str(target), "--json", timeout=300).ok().json()
    assert r["check"]["ok"] and r["check"]["tensors"] > 0
    cli(env, "models", "import", str(target), "--name", "tiny-copy").ok()
    names = {m["name"]: m for m in cli(env, "models", "ls", "--json").ok().json()["models"]}
    assert names["tiny-copy"]["ok"]
