"""Media input details through the real ffmpeg: sample-exact decoding, stream choice, downmix, seeking,
rotated video, and the reference-voice limits."""
from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.model import media
from unimoe_audio.model.errors import InvalidInput, MediaError


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-v", "error", *args], check=True)


def noise(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, channels)) * 0.1).astype(np.float32)


@pytest.mark.parametrize("name,subtype", [("a.wav", "PCM_16"), ("a.flac", "PCM_24"), ("a.wav", "FLOAT")])
def test_decoding_is_sample_exact_like_soundfile(tmp_path, name, subtype):
    # audiotools (the reference) reads with soundfile; ffmpeg must give the very same floats.
    path = tmp_path / name
    sf.write(path, noise(16000), 16000, subtype=subtype)
    ref, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(media.load_audio(path), ref)


def test_start_and_duration_cut_exact_samples(tmp_path):
    path = tmp_path / "n.wav"
    sf.write(path, noise(32000), 16000, subtype="PCM_16")
    ref, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(media.load_audio(path, start=0.5, duration=0.25), ref[8000:12000])


def test_first_audio_stream_is_decoded_and_surround_is_downmixed(tmp_path):
    both = tmp_path / "two.mkv"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1",
           "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=1",
           "-filter_complex", "[1]pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0[s]",
           "-map", "0:a", "-map", "[s]", "-c:a", "pcm_s16le", str(both))
    x = media.load_audio(both)  # ffmpeg alone would pick the 6-channel stream
    assert x.shape == (16000,) and np.argmax(np.abs(np.fft.rfft(x))) == 440
    surround = tmp_path / "six.wav"
    sf.write(surround, noise(4800, channels=6), 48000, subtype="FLOAT")
    six = media.load_audio(surround, sr=48000, mono=False)
    assert six.shape == (6, 4800)
    np.testing.assert_allclose(media.load_audio(surround, sr=48000), six.mean(axis=0), atol=1e-7)
    assert media.load_audio(surround).shape == (1600,)


def test_audio_from_a_video_file_and_none_from_a_silent_video(tmp_path):
    av = tmp_path / "av.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=25", "-f", "lavfi",
           "-i", "sine=frequency=500:sample_rate=44100:duration=1", "-pix_fmt", "yuv420p", "-shortest", str(av))
    x = media.load_audio(av)
    assert abs(x.size - 16000) < 800 and np.argmax(np.abs(np.fft.rfft(x[2000:14000]))) * 16000 / 12000 == pytest.approx(500, abs=3)
    mute = tmp_path / "mute.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=25", "-pix_fmt", "yuv420p", str(mute))
    with pytest.raises(MediaError) as err:
        media.load_audio(mute, field="reference_audio")
    assert err.value.field == "reference_audio"


def test_rotated_phone_video_gives_upright_frames(tmp_path):
    flat = tmp_path / "flat.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2:size=160x120:rate=25", "-pix_fmt", "yuv420p", str(flat))
    rotated = tmp_path / "rot.mp4"
    ffmpeg("-i", str(flat), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    info = media.probe(rotated)
    assert (info.width, info.height) == (120, 160) and info.fps == Fraction(25)
    upright = media.extract_frames(rotated, 0, 2, fps=1, max_frames=4)
    plain = media.extract_frames(flat, 0, 2, fps=1, max_frames=4)
    assert upright.shape == (2, 160, 120, 3) and plain.shape == (2, 120, 160, 3)
    # the same picture turned a quarter: before the fix this was the right bytes cut at the wrong width
    assert np.abs(upright[0].astype(int) - np.rot90(plain[0], 1).astype(int)).mean() < 1.0


def test_reference_voice_longer_than_the_limit_is_cut_with_a_fade(tmp_path):
    speech = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "one two three four five six seven eight nine ten " * 3],
                   check=True)
    voice = media.load_reference_voice(speech, max_seconds=4.0)
    assert 3.0 * 16000 <= voice.size <= 4.0 * 16000
    assert abs(float(voice[-1])) < 1e-3 and voice.dtype == np.float32
    with pytest.raises(InvalidInput) as err:
        tiny = tmp_path / "click.wav"
        sf.write(tiny, np.r_[np.zeros(8000), 0.5 * np.ones(80), np.zeros(8000)].astype(np.float32), 16000)
        media.load_reference_voice(tiny, field="voice")
    assert err.value.field == "voice"
