"""What the Blender add-on asks for and where it puts the result: plain functions, no bpy.

The add-on itself is :mod:`unimoe_audio.integrations.blender_addon` (it imports bpy, so it only loads
inside Blender); it reads a strip's file, its visible range (``frame_final_start``..``frame_final_end``),
where the clip starts in the file (``frame_start``) and the scene rate ``fps / fps_base`` as an exact
rational (24000/1001 ...), and calls these to build a request of exactly the strip's length in frames
(:func:`strip_request` for a movie strip's score, :func:`text_request` for a text strip's speech) and to
choose the channel of the new sound strip (:func:`pick_channel`).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable

from unimoe_audio.integrations.timeline import frames_to_seconds, parse_rate, rate_string, samples_for_frames, vision_fps

MAX_CHANNEL = 128


# --------------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------------
def scene_rate(fps: int, fps_base: float) -> Fraction:
    """Blender's ``scene.render.fps / fps_base`` as an exact rate: fps_base is a float32 (1.001 is stored as
    1.0010000467...), so the NTSC family snaps to 24000/1001, 30000/1001, 60000/1001."""
    return parse_rate(float(fps) / float(fps_base))


@dataclass
class StripRequest:
    video: str
    in_seconds: float
    out_seconds: float
    frames: int
    fps: str
    start_frame: int  # where the sound strip goes (the movie strip's first visible frame)
    samples: int  # expected length at the output rate
    warning: str = ""

    def fields(self, *, caption: str = "", mode: str = "vision", folder: str | None = None,
               sample_rate: int = 48000, seed: int | None = None, name: str | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"video": self.video, "caption": caption, "in_seconds": self.in_seconds,
                             "out_seconds": self.out_seconds, "mode": mode, "frames": self.frames, "fps": self.fps,
                             "fit_length": True, "sample_rate": sample_rate,
                             "frames_per_second": vision_fps(self.out_seconds - self.in_seconds)}
        if folder:
            f["folder"] = folder
        if seed is not None:
            f["seed"] = seed
        if name:
            f["name"] = name
        return f


def strip_request(filepath: str, frame_start: float, frame_final_start: int, frame_final_end: int, fps: int,
                  fps_base: float, *, strip_fps: float | None = None, sample_rate: int = 48000) -> StripRequest:
    """The request for a movie strip.

    ``frame_start`` is where the clip's frame 0 sits on the timeline (before trimming), so the visible part
    begins ``frame_final_start - frame_start`` frames into the file. Blender plays one movie frame per
    scene frame; when the movie's own rate (``strip_fps``) differs from the scene's, the strip is
    retimed and the in/out seconds follow the scene rate (a warning says so).
    """
    if frame_final_end <= frame_final_start:
        raise ValueError("the strip has no length")
    rate = scene_rate(fps, fps_base)
    offset = int(round(frame_final_start - frame_start))
    if offset < 0:
        raise ValueError("the strip starts before its clip (negative offset)")
    n = int(frame_final_end - frame_final_start)
    in_s = frames_to_seconds(offset, rate)
    warning = ""
    if strip_fps and abs(float(strip_fps) - float(rate)) > 0.01:
        warning = (f"the movie runs at {float(strip_fps):.3f} fps but the scene at {float(rate):.3f} fps; "
                   "times follow the scene rate")
    return StripRequest(video=filepath, in_seconds=float(in_s), out_seconds=float(in_s + frames_to_seconds(n, rate)),
                        frames=n, fps=rate_string(rate), start_frame=int(frame_final_start),
                        samples=samples_for_frames(n, rate, sample_rate), warning=warning)


def pick_channel(occupied: Iterable[tuple[int, int, int]], start: int, end: int, above: int) -> int:
    """The lowest channel above ``above`` with nothing overlapping ``start..end`` (strips given as
    ``(channel, frame_final_start, frame_final_end)``)."""
    busy: dict[int, list[tuple[int, int]]] = {}
    for ch, s, e in occupied:
        busy.setdefault(int(ch), []).append((int(s), int(e)))
    for ch in range(int(above) + 1, MAX_CHANNEL + 1):
        if all(e <= start or s >= end for s, e in busy.get(ch, [])):
            return ch
    raise ValueError("no free channel above the strip")


@dataclass
class TextRequest:
    """Speech for a text strip: its text, spoken to exactly the strip's length in frames."""

    text: str
    frames: int
    fps: str
    start_frame: int
    samples: int

    def fields(self, *, voice: str = "", folder: str | None = None, sample_rate: int = 48000,
               seed: int | None = None, name: str | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"text": self.text, "frames": self.frames, "fps": self.fps, "fit_length": True,
                             "sample_rate": sample_rate}
        if voice:
            f["voice"] = voice
        if folder:
            f["folder"] = folder
        if seed is not None:
            f["seed"] = seed
        if name:
            f["name"] = name
        return f


def text_request(text: str, frame_final_start: int, frame_final_end: int, fps: int, fps_base: float, *,
                 sample_rate: int = 48000) -> TextRequest:
    """The speech request of a text strip showing ``text`` from ``frame_final_start`` to ``frame_final_end``."""
    text = (text or "").strip()
    if not text:
        raise ValueError("the text strip has no text")
    if frame_final_end <= frame_final_start:
        raise ValueError("the strip has no length")
    rate = scene_rate(fps, fps_base)
    n = int(frame_final_end - frame_final_start)
    return TextRequest(text=text, frames=n, fps=rate_string(rate), start_frame=int(frame_final_start),
                       samples=samples_for_frames(n, rate, sample_rate))


@dataclass
class ExtendRequest:
    """Music continuing a sound strip's file from where the strip ends to the end of its movie strip."""

    sound: str
    continue_from: float  # seconds into the sound file where the strip stops
    frames: int  # new frames (the gap to the movie strip's end)
    fps: str
    start_frame: int  # where the new sound strip goes: the sound strip's end
    samples: int

    def fields(self, *, caption: str, folder: str | None = None, sample_rate: int = 48000,
               seed: int | None = None, name: str | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"caption": caption, "continue_audio": self.sound, "continue_from": self.continue_from,
                             "frames": self.frames, "fps": self.fps, "new_only": True, "sample_rate": sample_rate}
        if folder:
            f["folder"] = folder
        if seed is not None:
            f["seed"] = seed
        if name:
            f["name"] = name
        return f


def extend_request(sound: str, frame_start: float, frame_final_start: int, frame_final_end: int,
                   movie_final_end: int, fps: int, fps_base: float, *, sample_rate: int = 48000) -> ExtendRequest:
    """The request extending a sound strip (its file starts at ``frame_start``; visible
    ``frame_final_start..frame_final_end``) to ``movie_final_end``: the new part is butted to the strip."""
    if frame_final_end <= frame_final_start:
        raise ValueError("the sound strip has no length")
    n = int(movie_final_end - frame_final_end)
    if n <= 0:
        raise ValueError("the sound strip already reaches the end of its movie strip")
    rate = scene_rate(fps, fps_base)
    join = frames_to_seconds(int(round(frame_final_end - frame_start)), rate)
    return ExtendRequest(sound=sound, continue_from=float(join), frames=n, fps=rate_string(rate),
                         start_frame=int(frame_final_end), samples=samples_for_frames(n, rate, sample_rate))


def movie_for_sound(strips: Iterable[Any], sound: Any) -> Any:
    """The movie strip a sound strip belongs to: the one overlapping it most (ties: the lowest channel)."""
    best, best_key = None, None
    for s in strips:
        if getattr(s, "type", "") != "MOVIE":
            continue
        overlap = min(s.frame_final_end, sound.frame_final_end) - max(s.frame_final_start, sound.frame_final_start)
        if overlap <= 0:
            continue
        key = (overlap, -s.channel)
        if best_key is None or key > best_key:
            best, best_key = s, key
    if best is None:
        raise ValueError("no movie strip under the sound strip: place the sound over its picture")
    return best
