"""Music that continues the editor's clip, and loops (model/continuation.py, model/splice.py), on the tiny
random bundle: the prefix codes are the codec's encoding of the clip, the original's samples survive bit
for bit (48 kHz / 24-bit, and 44.1 kHz resampled once), lengths are exact, --new-only butts on, loops
wrap seamlessly, bad inputs name their field."""
from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.model import audio_out, media, splice
from unimoe_audio.model.continuation import prefix_frames
from unimoe_audio.model.errors import InvalidInput
from unimoe_audio.model.requests import Length, MusicRequest, Progress, SamplingParams

OUT = 48000


def music_clip(path: Path, seconds: float, rate: int, channels: int, subtype: str, seed: int = 0) -> np.ndarray:
    """A 'music' clip (chords, a pulse and some noise) written at ``rate``/``subtype``; returns its ints."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = sum(0.12 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220.0, 277.2, 329.6, 440.0))
    x = x * (0.6 + 0.4 * (np.sin(2 * np.pi * 2 * t) > 0)) + 0.02 * rng.standard_normal(t.size)
    chans = np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    sf.write(str(path), chans, rate, subtype=subtype)
    data, _ = sf.read(str(path), dtype="int32", always_2d=True)
    return data


def written_ints(audio: np.ndarray, rate: int, bit_depth: int = 24) -> np.ndarray:
    """What a reader of the written WAV gets (the writer's float -> PCM path)."""
    with tempfile.TemporaryDirectory() as d:
        p = audio_out.write_wav(Path(d) / "x.wav", audio, rate, bit_depth=bit_depth)
        data, _ = sf.read(str(p), dtype="int32", always_2d=True)
    return data


@pytest.fixture(scope="module")
def eng(tiny_engine):
    # A small window (60 frames, 20 of context) so a 2 s clip is longer than the window.
    return tiny_engine(window_frames=60)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    ints48 = music_clip(d / "take48.wav", 2.5, 48000, 2, "PCM_24")
    ints44 = music_clip(d / "take44.wav", 2.5, 44100, 1, "PCM_16", seed=1)
    (d / "notes.wav").write_text("these are not samples\n")
    music_clip(d / "short.wav", 0.6, 48000, 1, "PCM_16")
    return {"dir": d, "48": d / "take48.wav", "ints48": ints48, "44": d / "take44.wav", "ints44": ints44}


def req(**kw) -> MusicRequest:
    kw.setdefault("sampling", SamplingParams(seed=3))
    return MusicRequest("warm strings", **kw)


def test_prefix_codes_are_the_codecs_encoding_of_the_clip(eng, clips):
    job = eng.prepare(req(continue_audio=str(clips["48"]), length=Length(seconds=1.0)))
    x = media.load_audio(clips["48"], sr=16000, mono=True)
    n_frames = int(round(2.5 * 16000)) // 320
    p = prefix_frames(n_frames, eng.window_frames)
    assert p < n_frames  # the 2.5 s clip is longer than the 1.2 s window: its last window goes in
    want = eng.encode_audio(x[(n_frames - p) * 320: n_frames * 320])
    np.testing.assert_array_equal(job.plan.prefix, want)
    # ... and they are the first frames of the generation, through the delay pattern like generated frames.
    res = eng.music(req(continue_audio=str(clips["48"]), length=Length(seconds=1.0)))
    np.testing.assert_array_equal(res.codes[:p], want)
    sp = res.info["splice"]
    assert sp["prefix_frames"] == p and sp["clip_frames"] == n_frames
    assert Fraction(sp["join_fraction"]) == Fraction(5, 2)


def test_continue_keeps_the_original_bit_for_bit_48k_24bit(eng, clips):
    res = eng.music(req(continue_audio=str(clips["48"]), length=Length(seconds=1.5)))
    full, info = splice.render(res.audio, res.info["splice"], out_rate=OUT, channels=2)
    j = int(2.5 * OUT)
    assert full.shape == (2, j + int(1.5 * OUT))  # exact length
    ints = written_ints(full, OUT)
    np.testing.assert_array_equal(ints[:j], clips["ints48"][:j])  # untouched up to the join, no gain
    assert info["original_resampled"] is False
    # The new part is at the original's loudness.
    assert abs(info["new_lufs"] - info["original_lufs"]) < 1.0
    # --new-only butted after the original is the full output.
    new, _ = splice.render(res.audio, res.info["splice"], out_rate=OUT, channels=2, new_only=True)
    np.testing.assert_array_equal(np.concatenate([full[:, :j], new], axis=1), full)
    np.testing.assert_array_equal(np.concatenate([clips["ints48"][:j], written_ints(new, OUT)]), ints)
    # No click at the join: the step there is like the steps around it.
    step = np.abs(full[:, j] - full[:, j - 1]).max()
    assert step <= np.percentile(np.abs(np.diff(full[:, j - 4800:j + 4800], axis=1)), 99.5)


def test_continue_44k_is_resampled_once_and_to_seconds_is_the_total(eng, clips):
    res = eng.music(req(continue_audio=str(clips["44"]), continue_from=2.0, to_seconds=3.25))
    full, info = splice.render(res.audio, res.info["splice"], out_rate=OUT, channels=2)
    assert full.shape[-1] == int(3.25 * OUT)
    assert info["original_resampled"] is True and info["original_rate"] == 44100
    orig = clips["ints44"].T.astype(np.float32) / 2**31  # the file's own samples as floats
    once = audio_out.to_channels(audio_out.to_rate(orig, 44100, OUT), 2)  # 44.1 -> 48 kHz, one step
    j = 2 * OUT
    np.testing.assert_array_equal(written_ints(full, OUT)[:j], written_ints(once[:, :j], OUT))


def test_tempo_puts_the_join_on_a_bar_line(eng, clips):
    # 2.5 s at 100 BPM: bars of 2.4 s, so the join moves back to 2.4 s.
    res = eng.music(req(continue_audio=str(clips["48"]), tempo_bpm=100, length=Length(seconds=1.0)))
    sp = res.info["splice"]
    assert Fraction(sp["join_fraction"]) == Fraction(12, 5)
    full, info = splice.render(res.audio, sp, out_rate=OUT, channels=2)
    j = int(2.4 * OUT)
    assert info["join_samples"] == j and full.shape[-1] == j + OUT
    np.testing.assert_array_equal(written_ints(full, OUT)[:j], clips["ints48"][:j])


def test_loop_is_exact_and_wraps_seamlessly(eng):
    res = eng.music(req(loop=True, bars=1, tempo_bpm=150))  # 1.6 s
    loop, info = splice.render(res.audio, res.info["splice"], out_rate=OUT, channels=2)
    assert loop.shape == (2, int(1.6 * OUT))
    jump, p99 = splice.wrap_jump(loop)
    assert jump <= p99, (jump, p99)
    first, last = splice.beat_loudness(loop, OUT, 0.4)
    assert abs(first - last) <= 1.0, (first, last)


def test_loop_from_the_clip_starts_with_the_clip(eng, clips):
    res = eng.music(req(continue_audio=str(clips["48"]), loop=True, length=Length(seconds=3.0)))
    loop, info = splice.render(res.audio, res.info["splice"], out_rate=OUT, channels=2)
    assert loop.shape[-1] == 3 * OUT
    wrap, j = info["wrap_samples"], info["join_samples"]
    assert j == int(2.5 * OUT)
    np.testing.assert_array_equal(written_ints(loop, OUT)[wrap:j], clips["ints48"][wrap:j])
    jump, p99 = splice.wrap_jump(loop)
    assert jump <= p99


def test_streamed_previews_work_for_a_continuation(eng, clips):
    previews = []

    def cb(p: Progress) -> None:
        if p.partial_audio is not None:
            previews.append(p)

    r = req(continue_audio=str(clips["48"]), length=Length(seconds=1.5))
    r.stream_every = 0.3
    res = eng.music(r, cb)
    assert len(previews) >= 2
    assert all(0 < p.frames_done <= p.frames_total for p in previews)
    assert previews[-1].frames_total == res.info["splice"]["new_frames"]


@pytest.mark.parametrize("kw, field, words", [
    (dict(continue_audio="notes.wav", length=Length(seconds=1)), "continue_audio", "not audio"),
    (dict(continue_audio="short.wav", length=Length(seconds=1)), "continue_audio", "shorter than 1 s"),
    (dict(continue_audio="take48.wav", continue_from=9.0, length=Length(seconds=1)), "continue_from", "past the end"),
    (dict(continue_audio="take48.wav", to_seconds=2.0), "to_seconds", "not after the join"),
    (dict(continue_audio="take48.wav"), "length.seconds", "how much"),
    (dict(loop=True, length=Length(seconds=1.5)), "length.seconds", "shorter than one bar"),
    (dict(loop=True, bars=1, tempo_bpm=300, length=Length(seconds=0.5)), "bars", "give one of"),
])
def test_bad_inputs_name_their_field(eng, clips, kw, field, words):
    if "continue_audio" in kw:
        kw["continue_audio"] = str(clips["dir"] / kw["continue_audio"])
    with pytest.raises(InvalidInput) as e:
        eng.prepare(req(**kw))
    assert e.value.field == field and words in str(e.value), (e.value.field, str(e.value))
