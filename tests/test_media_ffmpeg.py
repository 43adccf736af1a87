"""Media input through the real ffmpeg: audio of any format, reference voices, video frames."""
from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from unimoe_audio.model import media
from unimoe_audio.model.errors import InvalidInput, MediaError


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech") / "voice.wav"
    subprocess.run(["espeak-ng", "-w", str(out), "This is the reference voice, speaking slowly."], check=True)
    return out


def test_any_format_and_rate_to_16k_mono(tmp_path):
    src = tmp_path / "tone.ogg"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1.5", "-ac", "2", str(src))
    x = media.load_audio(src)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - 24000) <= 400  # codec priming may add a few ms
    spectrum = np.abs(np.fft.rfft(x[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 2


def test_stereo_is_averaged_like_the_reference(tmp_path):
    src = tmp_path / "lr.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=1", "-f", "lavfi",
           "-i", "anullsrc=r=16000:cl=mono", "-filter_complex", "[0][1]amerge=inputs=2[a]", "-map", "[a]",
           "-t", "1", "-c:a", "pcm_f32le", str(src))
    both = media.load_audio(src, mono=False)
    mono = media.load_audio(src)
    assert both.shape[0] == 2
    np.testing.assert_allclose(mono, 0.5 * (both[0] + both[1]), atol=1e-7)


def test_reference_voice_is_trimmed_and_limited(speech, tmp_path):
    padded = tmp_path / "padded.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-i", str(speech), "-filter_complex",
           "[0]atrim=0:1[s];[s][1]concat=n=2:v=0:a=1[a]", "-map", "[a]", str(padded))
    raw = media.load_audio(padded)
    voice = media.load_reference_voice(padded)
    assert voice.size < raw.size - 0.8 * 16000  # the leading second of silence is gone
    short = media.load_reference_voice(padded, max_seconds=1.0)
    assert short.size <= 16000 and abs(short[-1]) < 1e-3


def test_silent_and_unreadable_references_name_the_field(tmp_path):
    silent = tmp_path / "silent.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", str(silent))
    with pytest.raises(InvalidInput) as err:
        media.load_reference_voice(silent)
    assert err.value.field == "reference_audio" and "silent" in str(err.value)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF nonsense")
    with pytest.raises(MediaError) as err:
        media.load_reference_voice(junk)
    assert err.value.field == "reference_audio"
    with pytest.raises(MediaError, match="no such file"):
        media.load_audio(tmp_path / "missing.wav", field="voice")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video") / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2.5:size=160x120:rate=24000/1001", "-pix_fmt", "yuv420p", str(out))
    return out


def test_video_probe_and_frames_over_in_out(clip):
    info = media.probe(clip)
    assert info.fps == Fraction(24000, 1001) and (info.width, info.height) == (160, 120)
    assert abs(media.video_duration(clip) - 60 / (24000 / 1001)) < 1e-3
    frames = media.extract_frames(clip, 0.5, 2.5, fps=2, max_frames=16)
    assert frames.dtype == np.uint8 and frames.shape == (4, 120, 160, 3)
    few = media.extract_frames(clip, 0.0, None, fps=24, max_frames=5)
    assert few.shape[0] == 5  # rate lowered so 5 frames span the clip
    assert not np.array_equal(few[0], few[-1])  # testsrc moves: first and last frames differ


def test_video_without_frames_or_stream(tmp_path, clip):
    audio_only = tmp_path / "a.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(audio_only))
    with pytest.raises(MediaError) as err:
        media.extract_frames(audio_only, 0, 1)
    assert err.value.field == "video"
    with pytest.raises(InvalidInput):
        media.extract_frames(clip, 2.0, 1.0)
