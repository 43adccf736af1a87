"""The published 7.16 B shape end to end without the real weights: ``models make-tiny --size full``
writes random bf16 shards in the published layout (streamed, low memory), ``models import --quant int8``
stores them int8, and a daemon serves that folder and generates 0.2 s of music.

Slow (minutes: ~14 GB written, quantized and read back; the machine needs ~11 GB of free memory for the
int8 model) but part of the default suite, so the full-size path cannot rot. Everything lives in
pytest's tmp folder and is deleted as soon as it is no longer needed.
"""
from __future__ import annotations

import json
import shutil

import pytest
import soundfile as sf

from _client_harness import Daemon, cli, make_env

SLOW_STEP = 3600  # seconds a silent step (quantizing 7 B weights on 2 cores) may take without output


@pytest.mark.slow
def test_full_size_random_model_imports_int8_and_serves(tmp_path):
    src = tmp_path / "full-random"
    home = tmp_path / "home"
    env = make_env(home, UNIMOE_AUDIO_MODEL="full-int8", UNIMOE_AUDIO_KEEP_ALIVE="0")
    try:
        made = cli(env, "models", "make-tiny", str(src), "--size", "full", "--json", timeout=SLOW_STEP).ok()
        check = made.json()["check"]
        assert check["ok"] and check["parameters"] == 7_159_504_896 and check["dtypes"] == ["BF16"]
        assert check["shards"] >= 3 and check["has_dac"] and check["has_tokenizer"]
        cfg = json.loads((src / "config.json").read_text())
        assert cfg["text_config"]["hidden_size"] == 2048 and cfg["text_config"]["num_hidden_layers"] == 36
        assert (src / "dac" / "weights_16khz.pth").stat().st_size > 250e6  # the full-size codec, not the tiny one
        assert "wrote model-00001-of-" in made.err  # progress, shard by shard

        imported = cli(env, "models", "import", str(src), "--name", "full-int8", "--quant", "int8", "--json",
                       timeout=SLOW_STEP).ok().json()
        assert imported["check"]["ok"] and "I8" in imported["check"]["dtypes"]
        shutil.rmtree(src)  # 14 GB: gone before the daemon needs the memory and the page cache

        out = tmp_path / "full.wav"
        cli(env, "music", "calm piano", "--seconds", "0.2", "--seed", "7", "-o", str(out), timeout=SLOW_STEP).ok()
        assert abs(sf.info(str(out)).duration - 0.2) < 0.01
        sidecar = json.loads(out.with_suffix(".json").read_text())
        assert sidecar["seed"] == 7 and sidecar["model"]["tiny"]
        st = cli(env, "status", "--json").ok().json()
        assert st["quant"] == "int8" and st["tiny"]  # random weights: said so
    finally:
        if (home / "run" / "daemon.json").exists():
            Daemon.attach(home, env).stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
