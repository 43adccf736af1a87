"""The target length is fitted once, at the rate the audio is delivered at: a requested 1.37 s is exactly
round(1.37 x rate) samples whether the engine hands 16 kHz audio to a library caller or the daemon writes
it at 16, 44.1 or 48 kHz (model/length.py's rule; the daemon's engine leaves its results unfitted)."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.client import protocol as P
from unimoe_audio.daemon import outputs
from unimoe_audio.model import audio_out
from unimoe_audio.model.engine import Engine
from unimoe_audio.model.length import HOP, SAMPLE_RATE, samples_at
from unimoe_audio.model.requests import Length, MusicRequest, SamplingParams
from unimoe_audio.model.tiny_bundle import ensure_tiny_model

SECONDS = 1.37


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = Engine.load(ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "m"), device="cpu", dtype="float32",
                      warmup=False)
    yield eng
    eng.close()


def _run(engine: Engine, fit: bool):
    got = {}
    batch = engine.job_batch(fit=fit)
    req = MusicRequest(caption="a calm piano melody", length=Length(seconds=SECONDS), sampling=SamplingParams(seed=5))
    batch.add(engine.prepare(req), on_done=lambda r: got.__setitem__("res", r))
    batch.run()
    res = got["res"]
    assert not isinstance(res, BaseException), res
    return res


def test_the_rule():
    assert [samples_at(SECONDS, r) for r in (16000, 44100, 48000)] == [21920, 60417, 65760]
    assert samples_at(1 / 3, 44100) == 14700  # read as the decimal it prints as, then rounded once


def test_library_results_are_fitted_at_16k(engine, one_thread):
    res = _run(engine, fit=True)
    assert res.sample_rate == SAMPLE_RATE and res.audio.shape[-1] == round(SECONDS * SAMPLE_RATE) == 21920
    assert res.info["length_fitted"] and res.info["target_samples"] == 21920


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_daemon_output_is_fitted_once_at_its_rate(engine, tmp_path, rate, one_thread):
    res = _run(engine, fit=False)
    # unfitted: the decode of ceil(21920 / 320) = 69 codec frames (the 16 kHz fit no longer runs first)
    n = res.audio.shape[-1]
    assert res.info["frames"] == 69 and n >= 68 * HOP and n != 21920 and not res.info["length_fitted"]
    opts = P.OutputOptions(sample_rate=rate, channels=1, bit_depth=24, normalize=False)
    out = outputs.write_output(res.audio, res.sample_rate, job_id=uuid.uuid4().hex, task="music", folder=tmp_path,
                               name=f"take-{rate}", opts=opts, defaults=opts, target_seconds=SECONDS, sidecar={})
    audio, sr = sf.read(out["path"], dtype="float32")
    assert sr == rate and audio.shape[0] == round(SECONDS * rate)
    # the cut is faded once, at the output's rate: the last 10 ms fall to zero, the audio before is the model's
    tail = audio[-int(0.010 * rate):]
    assert abs(float(tail[-1])) <= abs(float(np.abs(audio).max())) * 0.01 + 1e-6
    # without fit_length the model's own length (whole frames) is written, resampled and not trimmed
    raw = outputs.write_output(res.audio, res.sample_rate, job_id=uuid.uuid4().hex, task="music", folder=tmp_path,
                               name=f"raw-{rate}", opts=opts.model_copy(update={"fit_length": False}), defaults=opts,
                               target_seconds=SECONDS, sidecar={})
    assert sf.info(raw["path"]).frames == audio_out.to_rate(res.audio, SAMPLE_RATE, rate).shape[-1] != round(SECONDS * rate)
