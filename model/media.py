"""Reading media with ffmpeg: any audio format to 16 kHz mono, reference voices, video frames.

ffmpeg decodes at the file's own rate and channel count; channel mixing and resampling happen here
(in the reference's order: stereo averaged, then torchaudio's sinc recipe) so voice-prompt codes
match what the model saw in training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InvalidInput, MediaError
from .resample import resample

MODEL_RATE = 16000
# A clip may end this far past the probed duration: containers round durations to a frame or a packet.
END_TOLERANCE_S = 0.1


def ff_time(seconds: float) -> str:
    """Seconds as ffmpeg's -ss/-t take them: fixed notation (``str(1e-7)`` is '1e-07', which ffmpeg refuses),
    to the microsecond (ffmpeg's time base)."""
    return f"{max(0.0, float(seconds)):.6f}"


@dataclass
class MediaInfo:
    path: str
    duration: float
    has_audio: bool
    has_video: bool
    sample_rate: int | None = None
    channels: int | None = None
    fps: Fraction | None = None
    width: int | None = None  # as displayed: already swapped for a 90/270 degree rotation
    height: int | None = None
    video_index: int | None = None  # ffprobe stream index of the video stream described here


def _ffmpeg():
    import ffmpeg  # ffmpeg-python: builds the command line; the Debian ffmpeg binary does the work

    return ffmpeg


def probe(path: str | Path, field: str = "path") -> MediaInfo:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MediaError(f"no such file: {path}", field=field, wanted="an existing media file")
    try:
        info = _ffmpeg().probe(str(p))
    except _ffmpeg().Error as exc:
        msg = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise MediaError(f"ffprobe cannot read {p.name}: {msg[-1] if msg else exc}", field=field) from exc
    except FileNotFoundError as exc:
        raise MediaError("ffprobe is not installed (install ffmpeg)", field=field) from exc
    streams = info.get("streams", [])
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    duration = float(info.get("format", {}).get("duration") or 0.0)
    if video is not None and video.get("duration"):
        duration = float(video["duration"])
    fps = None
    if video is not None:
        rate = video.get("avg_frame_rate") or video.get("r_frame_rate") or "0/1"
        try:
            fps = Fraction(rate) if Fraction(rate) > 0 else None
        except (ValueError, ZeroDivisionError):
            fps = None
    width = height = None
    if video is not None and video.get("width") and video.get("height"):
        width, height = int(video["width"]), int(video["height"])
        if _rotation(video) % 180 == 90:  # phone videos: ffmpeg auto-rotates, so frames come out transposed
            width, height = height, width
    return MediaInfo(
        path=str(p), duration=duration, has_audio=audio is not None, has_video=video is not None,
        sample_rate=int(audio["sample_rate"]) if audio else None, channels=int(audio["channels"]) if audio else None,
        fps=fps, width=width, height=height, video_index=int(video["index"]) if video is not None else None,
    )


def _rotation(stream: dict) -> int:
    """Display rotation in degrees (0..359) from the display-matrix side data or the old ``rotate`` tag."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            try:
                return int(round(float(side["rotation"]))) % 360
            except (TypeError, ValueError):
                pass
    try:
        return int((stream.get("tags") or {}).get("rotate", 0)) % 360
    except (TypeError, ValueError):
        return 0


def _run(stream, field: str) -> bytes:
    try:
        out, _ = stream.run(capture_stdout=True, capture_stderr=True, quiet=True)
    except _ffmpeg().Error as exc:
        msg = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise MediaError(f"ffmpeg failed: {msg[-1] if msg else exc}", field=field) from exc
    return out


def load_audio(path: str | Path, sr: int = MODEL_RATE, mono: bool = True, start: float | None = None,
               duration: float | None = None, field: str = "audio") -> np.ndarray:
    """Decode any audio (or a video's audio track) to float32 at ``sr``: [n] if mono else [channels, n]."""
    info = probe(path, field=field)
    if not info.has_audio:
        raise MediaError("the file has no audio stream", field=field, wanted="a file with sound")
    kwargs = {}
    if start:
        kwargs["ss"] = ff_time(start)
    if duration is not None:
        kwargs["t"] = ff_time(duration)
    ff = _ffmpeg()
    channels = max(1, int(info.channels or 1))
    native = int(info.sample_rate or sr)
    # probe() described the FIRST audio stream, so decode that one (ffmpeg would otherwise pick the "best",
    # e.g. a 5.1 track), and pin its channel count and rate: some decoders (HE-AAC v2) report one layout and
    # output another, and the raw float stream carries no header to tell.
    stream = ff.input(str(path), **kwargs)["a:0"]
    raw = _run(stream.output("pipe:", format="f32le", acodec="pcm_f32le", ac=channels, ar=native), field)
    x = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    x = x[: x.size - x.size % channels].reshape(-1, channels).T
    if mono:
        # The reference averages exactly two channels; more are averaged likewise instead of refused.
        x = 0.5 * (x[0] + x[1]) if channels == 2 else x.mean(axis=0)
    # exact=True for the model rate: the bit-exact torchaudio recipe, so prompt codes match the reference.
    x = resample(np.ascontiguousarray(x), native, sr, exact=sr == MODEL_RATE)
    return np.ascontiguousarray(x, dtype=np.float32)


def _active_range(x: np.ndarray, sr: int, threshold_db: float = -45.0, margin_s: float = 0.05) -> tuple[int, int]:
    """First and last sample of the non-silent part, by 10 ms frame RMS relative to the loudest frame."""
    hop = max(1, sr // 100)
    n = x.size // hop
    if n == 0:
        return 0, x.size
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-20)
    ref = rms.max()
    loud = np.nonzero(20 * np.log10(rms / ref) > threshold_db)[0]
    margin = int(margin_s * sr)
    return max(0, loud[0] * hop - margin), min(x.size, (loud[-1] + 1) * hop + margin)


def load_reference_voice(path: str | Path, sr: int = MODEL_RATE, max_seconds: float = 15.0,
                         field: str = "reference_audio") -> np.ndarray:
    """A voice prompt: 16 kHz mono, leading/trailing silence trimmed, at most ``max_seconds``.

    Long references make the prompt long (50 placeholder tokens per second), so they are cut, at the
    quietest 10 ms frame of the last second (at most the last quarter) before the limit, with a short fade.
    """
    # Decode at most a minute past the limit: enough to skip leading silence, and a long file (a podcast
    # given as a reference) costs no more than that.
    x = load_audio(path, sr=sr, mono=True, duration=max_seconds + 60.0, field=field)
    if x.size == 0:
        raise InvalidInput("the recording is empty", field=field, wanted="a recording of the voice, 1-15 s")
    peak = float(np.abs(x).max())
    if not np.isfinite(peak) or peak < 1e-4:
        raise InvalidInput("the recording is silent", field=field, wanted="a recording of the voice")
    a, b = _active_range(x, sr)
    x = x[a:b]
    limit = int(max_seconds * sr)
    if x.size > limit:
        hop = sr // 100
        lo = limit - min(sr, limit // 4)  # look for a pause only near the end, never cut most of the clip
        window = x[lo:limit]
        n = window.size // hop
        cut = limit
        if n > 0:
            energy = (window[: n * hop].reshape(n, hop) ** 2).mean(axis=1)
            cut = lo + int(np.argmin(energy)) * hop + hop // 2
        x = x[:cut].copy()
        fade = min(x.size, sr // 50)
        x[x.size - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    if x.size < sr // 2:
        raise InvalidInput(f"only {x.size / sr:.2f} s of voice", field=field, wanted="at least 0.5 s of speech")
    return np.ascontiguousarray(x, dtype=np.float32)


def video_duration(path: str | Path, field: str = "video") -> float:
    info = probe(path, field=field)
    if not info.has_video:
        raise MediaError("the file has no video stream", field=field, wanted="a video file")
    if not info.duration > 0:
        raise MediaError("the video has no duration (no frames)", field=field)
    return info.duration


def extract_frames(path: str | Path, start: float = 0.0, end: float | None = None, fps: float = 1.0,
                   max_frames: int = 16, field: str = "video") -> np.ndarray:
    """RGB frames uint8 [N, H, W, 3] sampled at ``fps`` over [start, end), at most ``max_frames``.

    When the range holds more than ``max_frames`` at ``fps``, the rate is lowered so the frames still
    span the whole range (a score should see the end of the clip too).
    """
    info = probe(path, field=field)
    if not info.has_video or not info.width or not info.height:
        raise MediaError("the file has no video stream", field=field, wanted="a video file")
    stop = info.duration if end is None else min(float(end), info.duration)
    if start < 0 or stop <= start:
        raise InvalidInput(f"empty range {start:.3f}..{stop:.3f} s", field=field, wanted="in < out within the clip")
    if fps <= 0 or max_frames < 1:
        raise InvalidInput("fps and max_frames must be positive", field="frames_per_second")
    span = stop - start
    rate = fps if span * fps <= max_frames else max_frames / span
    ff = _ffmpeg()
    # Decode the stream probe() described (ffmpeg alone would pick the "best" one), and scale to the probed
    # display size: raw RGB has no header, so the frame size must be known for sure to cut the bytes.
    stream = ff.input(str(path), ss=ff_time(start), t=ff_time(span))[str(info.video_index)]
    stream = stream.filter("fps", fps=rate, round="down").filter("scale", info.width, info.height)
    raw = _run(stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", vframes=max_frames, an=None), field)
    size = info.width * info.height * 3
    n = len(raw) // size
    if n == 0:
        raise MediaError("no frames in that range", field=field, wanted="a range that contains video frames")
    frames = np.frombuffer(raw[: n * size], dtype=np.uint8).reshape(n, info.height, info.width, 3)
    return frames.copy()


def frames_to_seconds(frames: int, fps: Fraction) -> float:
    return float(Fraction(frames) / fps)


def seconds_to_samples(seconds: float, sr: int) -> int:
    return int(math.floor(seconds * sr + 0.5))
