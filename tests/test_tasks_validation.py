"""Bad inputs raise typed errors naming the field; progress and cancellation; length planning."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.model import tasks
from unimoe_audio.model.engine import Engine
from unimoe_audio.model.errors import Cancelled, InvalidInput, MediaError
from unimoe_audio.model.requests import (Length, MusicRequest, SamplingParams, SpeechRequest, VideoScoreRequest)
from unimoe_audio.model.tiny_bundle import ensure_tiny_model

VOICE = np.random.default_rng(0).integers(0, 1024, size=(40, 12))


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    e = Engine.load(ensure_tiny_model(tmp_path_factory.mktemp("m") / "tiny"), device="cpu", window_frames=40,
                    context_frames=10)
    yield e
    e.close()


def _field(exc_info):
    return exc_info.value.field


def _speech(**kw):
    base = dict(text="Hello.", reference_text="A voice.", voice_codes=VOICE, length=Length(seconds=0.2))
    base.update(kw)
    return SpeechRequest(**base)


@pytest.mark.parametrize("sampling, field", [
    (SamplingParams(temperature=-0.1), "sampling.temperature"),
    (SamplingParams(top_p=0.0), "sampling.top_p"),
    (SamplingParams(top_p=1.5), "sampling.top_p"),
    (SamplingParams(top_k=0), "sampling.top_k"),
    (SamplingParams(top_k=5000), "sampling.top_k"),
    (SamplingParams(cfg_scale=-1.0), "sampling.cfg_scale"),
    (SamplingParams(cfg_scale=float("nan")), "sampling.cfg_scale"),
    (SamplingParams(eos_factor=-0.5), "sampling.eos_factor"),
    (SamplingParams(seed=-3), "sampling.seed"),
])
def test_bad_sampling(eng, sampling, field):
    with pytest.raises(InvalidInput) as e:
        eng.music(MusicRequest(caption="x", length=Length(seconds=0.2), sampling=sampling))
    assert _field(e) == field


@pytest.mark.parametrize("length, field", [
    (Length(seconds=0.0), "length.seconds"),
    (Length(seconds=-2.0), "length.seconds"),
    (Length(seconds=601.0), "length.seconds"),
    (Length(frames=10), "length.fps"),
    (Length(frames=0, fps=Fraction(25)), "length.frames"),
    (Length(frames=10, fps=Fraction(0)), "length.fps"),
    (Length(frames=10**6, fps=Fraction(24)), "length.frames"),
    (Length(min_seconds=5.0, max_seconds=2.0), "length.min_seconds"),
    (Length(max_seconds=0.0), "length.max_seconds"),
])
def test_impossible_lengths(eng, length, field):
    with pytest.raises(InvalidInput) as e:
        eng.music(MusicRequest(caption="x", length=length))
    assert _field(e) == field


def test_speech_inputs(eng, tmp_path):
    for kw, field in [(dict(text="   "), "text"), (dict(text=""), "text"), (dict(reference_text=""), "reference_text"),
                      (dict(voice_codes=None), "reference_audio"),
                      (dict(voice_codes=np.zeros((5, 3), int)), "voice_codes"),
                      (dict(voice_codes=np.full((5, 12), 2000)), "voice_codes")]:
        with pytest.raises(InvalidInput) as e:
            eng.speech(_speech(**kw))
        assert _field(e) == field, kw
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(MediaError) as e:
        eng.speech(_speech(voice_codes=None, reference_audio=str(junk)))
    assert _field(e) == "reference_audio"
    with pytest.raises(MediaError) as e:
        eng.speech(_speech(voice_codes=None, reference_audio=str(tmp_path / "missing.wav")))
    assert _field(e) == "reference_audio"
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(InvalidInput) as e:
        eng.speech(_speech(voice_codes=None, reference_audio=str(silent)))
    assert _field(e) == "reference_audio"
    with pytest.raises(InvalidInput) as e:
        eng.encode_voice(str(silent), "words")
    assert _field(e) == "audio_path"


def test_music_inputs(eng):
    for kw, field in [(dict(caption=""), "caption"), (dict(tempo_bpm=5), "tempo_bpm"), (dict(bars=0), "bars"),
                      (dict(key=""), "key"), (dict(bars=100000, tempo_bpm=20), "bars")]:
        base = dict(caption="piano", length=Length(seconds=0.2))
        base.update(kw)
        with pytest.raises(InvalidInput) as e:
            eng.music(MusicRequest(**base))
        assert _field(e) == field, kw


def test_video_inputs(eng, tmp_path):
    wav = tmp_path / "audio_only.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    with pytest.raises(MediaError) as e:
        eng.video_score(VideoScoreRequest(video=str(tmp_path / "none.mp4")))
    assert _field(e) == "video"
    with pytest.raises(MediaError) as e:
        eng.video_score(VideoScoreRequest(video=str(wav)))
    assert _field(e) == "video"
    with pytest.raises(InvalidInput) as e:
        eng.video_score(VideoScoreRequest(video=str(wav), mode="bogus"))  # type: ignore[arg-type]
    assert _field(e) == "mode"
    with pytest.raises(InvalidInput) as e:
        eng.video_score(VideoScoreRequest(video=str(wav), frames_per_second=0))
    assert _field(e) == "frames_per_second"


def test_wrong_request_type(eng):
    with pytest.raises(InvalidInput) as e:
        eng.music(SpeechRequest(text="x"))  # type: ignore[arg-type]
    assert _field(e) == "request"
    out = eng.run_batch([object()])
    assert isinstance(out[0], InvalidInput)


def test_progress_and_cancel(eng):
    seen = []
    r = eng.music(MusicRequest(caption="piano", length=Length(seconds=1.0), sampling=SamplingParams(seed=1)),
                  progress=seen.append)
    assert r.audio.shape == (1, 16000)
    gen = [p for p in seen if p.stage == "generate"]
    assert gen and gen[-1].frames_total == 50 and max(p.frames_done for p in gen) <= 50
    assert [p.fraction for p in seen] == sorted(p.fraction for p in seen)

    calls = []

    def stop(p):
        calls.append(p)
        return False if p.stage == "generate" else None

    with pytest.raises(Cancelled):
        eng.music(MusicRequest(caption="piano", length=Length(seconds=1.0)), progress=stop)
    assert calls[-1].stage == "generate"

    def raise_(p):
        if p.stage == "generate" and p.frames_done >= 0:
            raise Cancelled("user")

    out = eng.run_batch([MusicRequest(caption="a", length=Length(seconds=0.3), sampling=SamplingParams(seed=1)),
                         MusicRequest(caption="b", length=Length(seconds=0.3), sampling=SamplingParams(seed=2))],
                        [raise_, None])
    assert isinstance(out[0], Cancelled) and out[1].audio.shape == (1, 4800)


def test_length_planning_units():
    assert tasks.target_samples_of(Length(frames=1, fps=Fraction(30000, 1001))) == 534  # 533.866 -> 534
    assert tasks.target_samples_of(Length(seconds=2.5)) == 40000
    p = tasks.plan_length(Length(seconds=1.001))
    assert p.target_samples == 16016 and p.min_frames == p.max_frames == 51
    p = tasks.plan_length(Length(), default_max_frames=981)
    assert (p.target_samples, p.min_frames, p.max_frames) == (None, 100, 981)
    p = tasks.plan_length(Length(max_seconds=1.0))
    assert (p.min_frames, p.max_frames) == (50, 50)
    s, seed = tasks.resolve_sampling(SamplingParams(), "speech")
    assert (s.cfg_scale, s.eos_factor, s.top_k, s.top_p, s.temperature) == (1.0, 1.0, 45, 1.0, 1.0)
    s, _ = tasks.resolve_sampling(SamplingParams(seed=5), "music")
    assert (s.cfg_scale, s.eos_factor) == (10.0, 0.6)
    assert 0 <= seed < 2**63


def test_crossfade_join():
    a = np.ones(100, np.float32)
    b = np.zeros(100, np.float32)
    j = tasks.crossfade_join(a, b, 10)
    assert j.shape == (190,) and j[0] == 1 and j[-1] == 0 and np.all(np.diff(j[85:105]) <= 0)
