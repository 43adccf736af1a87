"""Client pieces that need no daemon: light imports, request building, typed errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unimoe_audio.client import protocol as P
from unimoe_audio.client.client import BadRequest, DaemonUnavailable, build_request, Client
from unimoe_audio.client.settings import load_settings


def test_client_and_cli_import_without_torch_or_numpy():
    code = (
        "import sys, json\n"
        "import unimoe_audio.client.client, unimoe_audio.client.cli, unimoe_audio.client.batch\n"
        "import unimoe_audio.client.models_store, unimoe_audio.client.progress\n"
        "from unimoe_audio.client.cli import build_parser; build_parser()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'huggingface_hub'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
    # and the test is able to notice: importing the model layer's request types does pull numpy in
    code2 = code.replace("import unimoe_audio.client.client,", "import unimoe_audio.model.requests, unimoe_audio.client.client,")
    out2 = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, check=True).stdout
    assert "numpy" in json.loads(out2)


def test_build_request_maps_flat_fields(tmp_path):
    req = build_request(
        "music", caption="calm piano", seconds=2.5, tempo_bpm=90, key="A minor", seed=3, top_k=10,
        output=str(tmp_path / "cue.wav"), sample_rate=22050, channels=1, bit_depth=16, loudness=-20, tag="t1",
        priority=5,
    )
    assert isinstance(req.spec, P.MusicTask)
    assert req.spec.length.seconds == 2.5 and req.spec.tempo_bpm == 90 and req.spec.key == "A minor"
    assert req.spec.sampling.seed == 3 and req.spec.sampling.top_k == 10
    assert req.output.folder == str(tmp_path) and req.output.name == "cue"
    assert (req.output.sample_rate, req.output.channels, req.output.bit_depth) == (22050, 1, 16)
    assert req.output.loudness_lufs == -20 and req.output.normalize is True
    assert req.tag == "t1" and req.priority == 5
    off = build_request("speech", text="hi", voice="narrator", loudness="off")
    assert isinstance(off.spec, P.SpeechTask) and off.spec.voice == "narrator" and off.output.normalize is False
    score = build_request("score", video="clip.mp4", in_seconds=1, out_seconds=3, caption="x")
    assert isinstance(score.spec, P.VideoScoreTask) and score.spec.video.endswith("/clip.mp4")
    assert score.spec.video.startswith("/")


@pytest.mark.parametrize(
    "kind, fields, field",
    [
        ("music", {"caption": "x", "seconds": -1}, "spec.length.seconds"),
        ("music", {"caption": "x", "sample_rate": 10}, "output.sample_rate"),
        ("music", {"caption": "x", "colour": "blue"}, "colour"),
        ("speech", {"text": "hi", "voice": "a", "reference_audio": "/tmp/x.wav", "reference_text": "t"}, None),
        ("dance", {"caption": "x"}, "task"),
    ],
)
def test_build_request_rejects_bad_fields_naming_them(kind, fields, field):
    with pytest.raises(BadRequest) as info:
        build_request(kind, **fields)
    if field is not None:
        assert info.value.field == field
    assert info.value.code == "invalid_input"


def test_client_without_daemon_raises_daemon_unavailable(tmp_path, monkeypatch):
    for k in [k for k in list(__import__("os").environ) if k.startswith("UNIMOE_AUDIO_")]:
        monkeypatch.delenv(k)
    with pytest.raises(DaemonUnavailable) as info:
        Client(load_settings(home=tmp_path), auto_start=False)
    assert info.value.code == "not_running"
