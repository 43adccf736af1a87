"""The three tasks on top of generation: speech (voice-cloning TTS), music, video score.

Each task: validate the request (InvalidInput naming the field) -> prepare inputs (reference voice,
video frames) -> plan generation items (sentence chunks, continuation windows, exact lengths) ->
generate -> decode with the DAC -> join (pauses, crossfades) -> fit to the exact target length.

Lengths. The model emits 50 codec frames per second (320 samples at 16 kHz). A target of N samples
generates exactly ``ceil(N / 320)`` frames (EOS is disabled before and forced at that frame), then
the decoded audio is trimmed to N samples with a short fade (audio_out.fit_length), so the output is
sample exact. Without a target the model stops on EOS between the min and max length.

Windows. One generation holds at most ``window_frames`` frames (981 = the reference's 1000 tokens
minus the delay tail, about 19.6 s). Longer music is generated window by window: each further window
is prefilled with the last ``context_frames`` frames of the previous one as already-generated frames
(continuation), and the decoded windows are crossfaded at the seams.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

from .errors import Cancelled, InvalidInput
from .generation import GenItem, GenResult, Sampling, new_seed
from .media import END_TOLERANCE_S
from .prompts import Prompt, build_music_prompt, build_speech_prompt, build_video_prompt, music_caption, sanitize
from .requests import (AudioResult, Length, MusicRequest, Progress, ProgressCallback, SamplingParams,
                       SpeechRequest, VideoScoreRequest)
from .text_split import normalize_space, split_text

SAMPLE_RATE = 16000
HOP = 320
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 50
MAX_SECONDS = 600.0
NUM_CODEBOOKS = 12
CODEBOOK_SIZE = 1024

# Reference defaults (spec 6.6).
DEFAULTS = {
    "music": dict(cfg_scale=10.0, temperature=1.0, top_p=1.0, top_k=45, eos_factor=0.6),
    "video_score": dict(cfg_scale=10.0, temperature=1.0, top_p=1.0, top_k=45, eos_factor=0.6),
    "speech": dict(cfg_scale=1.0, temperature=1.0, top_p=1.0, top_k=45, eos_factor=1.0),
}
DEFAULT_MIN_FRAMES = 100  # reference MIN_TOKENS (2 s)
SPEECH_PAUSE_SECONDS = 0.25
SPEECH_MAX_CHARS = 200
# Speech length without a target: each chunk may run to MARGIN x its estimated length + SLACK frames,
# the estimate being its characters x the reference's frames per character of transcript (how
# voice-cloning systems estimate duration). The model stops earlier on EOS; the cap only bounds a
# chunk whose EOS never comes (previously it ran to the whole window, ~20 s per chunk).
SPEECH_RATE_MARGIN = 1.5
SPEECH_RATE_SLACK_FRAMES = 50  # 1 s: room for a slow start or a final breath
SPEECH_MIN_SHARE = 0.5  # no EOS before half the estimate (unless min_seconds says otherwise)
SPEECH_FLOOR_FRAMES_PER_CHAR = 5.0  # ~10 characters/s, a slow reader: used when the reference was trimmed
REFERENCE_MAX_SECONDS = 15.0  # longer reference clips are trimmed (D17)
VIDEO_MAX_PIXELS_TOTAL = 512 * 28 * 28


# --- validation ----------------------------------------------------------------------------------------

def _num(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise InvalidInput(f"wanted a number, got {value!r}", field=field, wanted="number")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidInput(f"wanted a finite number, got {value!r}", field=field, wanted="finite number")
    return v


def resolve_sampling(p: SamplingParams | None, task: str) -> tuple[Sampling, int]:
    """Validated sampling settings with the task's reference defaults, and the seed to use."""
    p = p or SamplingParams()
    d = DEFAULTS[task]
    cfg = d["cfg_scale"] if p.cfg_scale is None else _num(p.cfg_scale, "sampling.cfg_scale")
    if not 0 <= cfg <= 100:
        raise InvalidInput(f"{cfg} is out of range", field="sampling.cfg_scale", wanted="0 <= cfg_scale <= 100")
    temp = d["temperature"] if p.temperature is None else _num(p.temperature, "sampling.temperature")
    if not 0 <= temp <= 10:
        raise InvalidInput(f"{temp} is out of range", field="sampling.temperature", wanted="0 <= temperature <= 10")
    top_p = d["top_p"] if p.top_p is None else _num(p.top_p, "sampling.top_p")
    if not 0 < top_p <= 1:
        raise InvalidInput(f"{top_p} is out of range", field="sampling.top_p", wanted="0 < top_p <= 1")
    if p.top_k is None:
        top_k = d["top_k"]
    else:
        if isinstance(p.top_k, bool) or not isinstance(p.top_k, (int, np.integer)) and not (
                isinstance(p.top_k, float) and float(p.top_k).is_integer()):
            raise InvalidInput(f"wanted an integer, got {p.top_k!r}", field="sampling.top_k", wanted="integer")
        top_k = int(p.top_k)
        if not 1 <= top_k <= 1027:
            raise InvalidInput(f"{top_k} is out of range", field="sampling.top_k", wanted="1 <= top_k <= 1027")
    eos = d["eos_factor"] if p.eos_factor is None else _num(p.eos_factor, "sampling.eos_factor")
    if not 0 <= eos <= 100:
        raise InvalidInput(f"{eos} is out of range", field="sampling.eos_factor", wanted="0 <= eos_factor <= 100")
    if p.seed is None:
        seed = new_seed()
    else:
        if isinstance(p.seed, bool) or not isinstance(p.seed, (int, np.integer)) or not 0 <= int(p.seed) < 2**63:
            raise InvalidInput(f"wanted an integer in [0, 2^63), got {p.seed!r}", field="sampling.seed",
                               wanted="integer >= 0")
        seed = int(p.seed)
    return Sampling(cfg_scale=cfg, temperature=temp, top_p=top_p, top_k=top_k, eos_factor=eos), seed


@dataclass
class LengthPlan:
    target_samples: int | None  # exact output length, or None (model decides)
    min_frames: int
    max_frames: int

    @property
    def exact(self) -> bool:
        return self.target_samples is not None


def target_samples_of(length: Length | None, field: str = "length") -> int | None:
    """Exact target in samples at 16 kHz, from seconds or frames at a rational fps. None if unset."""
    if length is None:
        return None
    if length.frames is not None or length.fps is not None:
        if length.frames is None or length.fps is None:
            missing = "frames" if length.frames is None else "fps"
            raise InvalidInput("frames and fps go together", field=f"{field}.{missing}", wanted="both frames and fps")
        if isinstance(length.frames, bool) or not isinstance(length.frames, (int, np.integer)) or length.frames <= 0:
            raise InvalidInput(f"wanted a positive integer, got {length.frames!r}", field=f"{field}.frames",
                               wanted="integer > 0")
        try:
            fps = Fraction(length.fps)
        except (TypeError, ValueError):
            raise InvalidInput(f"wanted a rational number, got {length.fps!r}", field=f"{field}.fps") from None
        if fps <= 0 or fps > 1000:
            raise InvalidInput(f"{length.fps} is out of range", field=f"{field}.fps", wanted="0 < fps <= 1000")
        secs = Fraction(int(length.frames)) / fps
        if secs > MAX_SECONDS:
            raise InvalidInput(f"{float(secs):.3f} s is too long", field=f"{field}.frames",
                               wanted=f"at most {MAX_SECONDS:g} s")
        return int(round(secs * SAMPLE_RATE))
    if length.seconds is not None:
        s = _num(length.seconds, f"{field}.seconds")
        if not 0 < s <= MAX_SECONDS:
            raise InvalidInput(f"{s} s is not possible", field=f"{field}.seconds",
                               wanted=f"0 < seconds <= {MAX_SECONDS:g}")
        n = int(round(Fraction(str(s)) * SAMPLE_RATE)) if isinstance(length.seconds, float) else int(
            round(Fraction(length.seconds) * SAMPLE_RATE))
        if n < 1:
            raise InvalidInput(f"{s} s is shorter than one sample", field=f"{field}.seconds")
        return n
    return None


def plan_length(length: Length | None, *, default_target_samples: int | None = None,
                default_min_frames: int = DEFAULT_MIN_FRAMES, default_max_frames: int = 981,
                field: str = "length") -> LengthPlan:
    length = length or Length()
    target = target_samples_of(length, field)
    if target is None:
        target = default_target_samples
    if target is not None:
        frames = max(1, math.ceil(target / HOP))
        return LengthPlan(target, frames, frames)
    lo, hi = default_min_frames, default_max_frames
    if length.min_seconds is not None:
        v = _num(length.min_seconds, f"{field}.min_seconds")
        if not 0 <= v <= MAX_SECONDS:
            raise InvalidInput(f"{v} s is not possible", field=f"{field}.min_seconds",
                               wanted=f"0 <= min_seconds <= {MAX_SECONDS:g}")
        lo = int(round(v * FRAMES_PER_SECOND))
    if length.max_seconds is not None:
        v = _num(length.max_seconds, f"{field}.max_seconds")
        if not 0 < v <= MAX_SECONDS:
            raise InvalidInput(f"{v} s is not possible", field=f"{field}.max_seconds",
                               wanted=f"0 < max_seconds <= {MAX_SECONDS:g}")
        hi = max(1, int(round(v * FRAMES_PER_SECOND)))
        if length.min_seconds is None:
            lo = min(lo, hi)
    elif length.min_seconds is not None:
        hi = max(hi, lo)  # at least min_seconds, though longer than the default maximum
    if lo > hi:
        raise InvalidInput("min_seconds is above max_seconds", field=f"{field}.min_seconds",
                           wanted="min_seconds <= max_seconds")
    return LengthPlan(None, lo, hi)


def _text(value: Any, field: str, *, required: bool = True, max_chars: int = 20000) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"wanted text, got {type(value).__name__}", field=field, wanted="text")
    t = normalize_space(sanitize(value))
    if required and not t:
        raise InvalidInput("is empty", field=field, wanted="non-empty text")
    if len(t) > max_chars:
        raise InvalidInput(f"{len(t)} characters is too long", field=field, wanted=f"at most {max_chars} characters")
    return t


def check_voice_codes(codes: Any, field: str = "voice_codes") -> np.ndarray:
    try:
        arr = np.asarray(codes)
    except Exception:  # noqa: BLE001
        raise InvalidInput("not an array", field=field, wanted=f"[T, {NUM_CODEBOOKS}] integer codes") from None
    if arr.ndim != 2 or arr.shape[1] != NUM_CODEBOOKS or arr.shape[0] < 1:
        raise InvalidInput(f"shape {arr.shape}", field=field, wanted=f"[T, {NUM_CODEBOOKS}] integer codes, T >= 1")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.mod(arr, 1) == 0):
            raise InvalidInput("codes must be integers", field=field, wanted="integer codes")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
        raise InvalidInput("codes out of range", field=field, wanted=f"0 <= code < {CODEBOOK_SIZE}")
    return arr


# --- audio helpers -------------------------------------------------------------------------------------

def fade(n: int, rising: bool = True) -> np.ndarray:
    x = (np.arange(n, dtype=np.float32) + 0.5) / max(1, n)
    return x if rising else x[::-1].copy()


def crossfade_join(a: np.ndarray, b: np.ndarray, overlap: int) -> np.ndarray:
    """Join 1-D ``a`` and ``b`` whose ``overlap`` samples (a's tail, b's head) cover the same time."""
    overlap = max(0, min(overlap, a.shape[-1], b.shape[-1]))
    if overlap == 0:
        return np.concatenate([a, b])
    mixed = a[-overlap:] * fade(overlap, False) + b[:overlap] * fade(overlap, True)
    return np.concatenate([a[:-overlap], mixed.astype(np.float32), b[overlap:]])


# --- progress ------------------------------------------------------------------------------------------

class Reporter:
    """Maps stage progress onto the request's 0..1 fraction; raises Cancelled when told to stop."""

    SPANS = {"prepare": (0.0, 0.05), "encode": (0.05, 0.1), "generate": (0.1, 0.9), "decode": (0.9, 0.99),
             "finish": (1.0, 1.0)}

    def __init__(self, cb: ProgressCallback | None):
        self.cb = cb

    def __call__(self, stage: str, frac: float = 0.0, frames_done: int = 0, frames_total: int = 0,
                 partial: np.ndarray | None = None) -> None:
        if self.cb is None:
            return
        lo, hi = self.SPANS.get(stage, (0.0, 1.0))
        f = lo + (hi - lo) * max(0.0, min(1.0, frac))
        if self.cb(Progress(stage=stage, fraction=f, frames_done=frames_done, frames_total=frames_total,
                            partial_audio=partial)) is False:
            raise Cancelled("stopped by the progress callback")


# --- streamed previews ---------------------------------------------------------------------------------

STREAM_CONTEXT_FRAMES = 12  # as codec.iter_decode: enough codes either side for the decoder's receptive field


class IncrementalDecode:
    """The audio of a growing code sequence, decoding only the frames added since the last call.

    Frames with ``context`` frames after them are final ("stable"): their audio is kept. Each call
    decodes from ``context`` frames before the stable end to the newest frame, keeps what became
    stable, and returns the stable audio plus the provisional tail. The cost per call is the new frames
    plus twice the context, so a streamed job costs linear, not quadratic, decode time.
    """

    def __init__(self, decode: Callable[[np.ndarray], np.ndarray], context: int = STREAM_CONTEXT_FRAMES,
                 hop: int = HOP):
        self.decode = decode
        self.context = int(context)
        self.hop = int(hop)
        self.stable_frames = 0
        self._stable: list[np.ndarray] = []
        self.decoded_frames = 0  # frames put through the decoder, in all (for the bench and tests)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        n = int(codes.shape[0])
        if n < self.stable_frames:  # not a continuation of what we saw: start over
            self.stable_frames, self._stable = 0, []
        lo = max(0, self.stable_frames - self.context)
        audio = np.asarray(self.decode(codes[lo:n]), dtype=np.float32).reshape(-1)
        self.decoded_frames += n - lo
        start = (self.stable_frames - lo) * self.hop
        new_stable = max(self.stable_frames, n - self.context)
        cut = min(audio.shape[0], (new_stable - lo) * self.hop)
        if cut > start:
            self._stable.append(audio[start:cut])
        self.stable_frames = new_stable
        return np.concatenate([*self._stable, audio[cut:]])


# --- task plans ----------------------------------------------------------------------------------------

@dataclass
class TaskPlan:
    """Everything needed to run one request (possibly as several windows/chunks)."""

    task: str
    sampling: Sampling
    seed: int
    length: LengthPlan
    kind: str  # "chunks" (speech: independent items joined with pauses) or "windows" (continuation)
    prompts: list[Prompt] = field(default_factory=list)  # chunks: one per chunk; windows: one prompt
    chunk_frames: list[tuple[int, int]] = field(default_factory=list)  # (min, max) per chunk
    info: dict[str, Any] = field(default_factory=dict)
    # windows: frames that start the segment (a continued clip's codes, model/continuation.py); counted in
    # the length plan, returned with the new frames.
    prefix: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


# --- running plans -------------------------------------------------------------------------------------

def derive_seed(seed: int, i: int) -> int:
    """Seed of the i-th chunk/window of a request (i = 0 is the request seed itself)."""
    return (seed + i * 0x9E3779B97F4A7C15) % (2**63)


class Job:
    """One request in flight: yields generation items round by round, then assembles the audio.

    Speech: one round, one item per sentence chunk; joined with pauses. Music / video: one item per
    round (continuation windows) until the length is reached or the model stops on EOS.
    """

    def __init__(self, task: str, plan: TaskPlan, reporter: Reporter, *, window_frames: int, context_frames: int,
                 decode: Callable[[np.ndarray], np.ndarray] | None = None, stream_every: float | None = None):
        self.task = task
        # Previews: the audio so far every ``stream_every`` seconds of new audio (first item only), decoding
        # only the new frames each time.
        self.decode = decode
        self.preview_frames = None if not stream_every or decode is None else max(1, round(stream_every * FRAMES_PER_SECOND))
        self.preview_decode = IncrementalDecode(decode) if self.preview_frames is not None else None
        self._previewed = 0
        self.plan = plan
        self.rep = reporter
        self.window = int(window_frames)
        self.context = int(min(context_frames, window_frames - 1))
        self.round = 0
        self.error: BaseException | None = None
        self.results: list[GenResult] = []  # chunks: one per chunk; windows: one per window
        self.codes = np.zeros((0, NUM_CODEBOOKS), dtype=np.int64)  # windows: all frames so far
        self.done = False
        self.t0 = time.monotonic()
        self.gen_seconds = 0.0
        lp = plan.length
        if plan.kind == "windows":
            self.total_max = lp.max_frames
            self.total_min = lp.min_frames
        else:
            self.total_max = sum(mx for _, mx in plan.chunk_frames)
            self.total_min = 0
        self._frames_before = 0
        self.base = 0  # frames given, not generated (a continued clip's prefix)
        if plan.kind == "windows" and plan.prefix is not None:
            self.codes = np.asarray(plan.prefix, dtype=np.int64)
            self.base = int(self.codes.shape[0])

    # progress -------------------------------------------------------------------------------------
    def _callback(self, share: list[int], slot: int) -> Callable[[int, int], bool | None]:
        def cb(done: int, total: int) -> bool | None:
            share[slot] = done
            frames = self._frames_before - self.base + sum(share)
            total = self.total_max - self.base
            self.rep("generate", frames / max(1, total), frames, total)
            return True

        return cb

    def _preview(self, prefix_len: int) -> Callable[[np.ndarray], None] | None:
        if self.preview_frames is None:
            return None

        def on_codes(codes: np.ndarray) -> None:
            # Frames of earlier windows, then this window's (its prefix repeats the tail of self.codes).
            frames = np.concatenate([self.codes[: self.codes.shape[0] - prefix_len], codes]) if self.codes.size else codes
            if frames.shape[0] - self._previewed < self.preview_frames:
                return
            self._previewed = frames.shape[0]
            audio = self.preview_decode(frames)
            done = self._frames_before - self.base + max(0, codes.shape[0] - prefix_len)
            total = self.total_max - self.base
            self.rep("generate", done / max(1, total), done, total, partial=audio)

        return on_codes

    # rounds ---------------------------------------------------------------------------------------
    def next_items(self) -> list[GenItem]:
        if self.done or self.error is not None:
            return []
        p = self.plan
        if p.kind == "chunks":
            if self.round > 0:
                return []
            share = [0] * len(p.prompts)
            return [GenItem(prompt=pr, sampling=p.sampling, max_frames=mx, min_frames=mn,
                            seed=derive_seed(p.seed, i), callback=self._callback(share, i),
                            on_codes=self._preview(0) if i == 0 else None)
                    for i, (pr, (mn, mx)) in enumerate(zip(p.prompts, p.chunk_frames))]
        have = self.codes.shape[0]
        remaining = self.total_max - have
        if remaining <= 0:
            return []
        prefix = None
        room = self.window
        if have > 0:
            # The first window after a given prefix takes all of it (continuation.prefix_frames sized it).
            k = have if self.round == 0 else min(self.context, have)
            prefix = self.codes[have - k:]
            room = self.window - k
        new_max = min(room, remaining)
        new_min = min(max(0, self.total_min - have), new_max)
        self._frames_before = have
        share = [0]
        return [GenItem(prompt=p.prompts[0], sampling=p.sampling, max_frames=new_max, min_frames=new_min,
                        seed=derive_seed(p.seed, self.round), prefix=prefix, callback=self._callback(share, 0),
                        on_codes=self._preview(0 if prefix is None else prefix.shape[0]))]

    def accept(self, results: Sequence[GenResult | BaseException]) -> None:
        self.round += 1
        for r in results:
            if isinstance(r, BaseException):
                self.error = r
                return
        self.results.extend(results)  # type: ignore[arg-type]
        if self.plan.kind == "chunks":
            self.done = True
            return
        r = results[0]
        assert isinstance(r, GenResult)
        self.codes = np.concatenate([self.codes, r.new_codes], axis=0)
        if (r.stopped_by_eos and not self.plan.length.exact) or self.codes.shape[0] >= self.total_max:
            self.done = True

    # audio ----------------------------------------------------------------------------------------
    def assemble(self, decode: Callable[[np.ndarray], np.ndarray], fit_length: Callable[..., np.ndarray],
                 crossfade_seconds: float = 0.05, pause_seconds: float = SPEECH_PAUSE_SECONDS) -> AudioResult:
        p = self.plan
        t_dec = time.monotonic()
        self.rep("decode", 0.0)
        if p.kind == "chunks":
            pieces = []
            pause = np.zeros(int(round(pause_seconds * SAMPLE_RATE)), dtype=np.float32)
            for i, r in enumerate(self.results):
                a = decode(r.codes) if r.codes.shape[0] else np.zeros(0, np.float32)
                n_f = min(int(0.005 * SAMPLE_RATE), a.shape[0] // 4)
                if n_f:  # de-click the chunk edges
                    a = a.copy()
                    a[:n_f] *= fade(n_f, True)
                    a[-n_f:] *= fade(n_f, False)
                if i:
                    pieces.append(pause)
                pieces.append(a.astype(np.float32))
                self.rep("decode", (i + 1) / len(self.results))
            audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
            codes = np.concatenate([r.codes for r in self.results]) if self.results else self.codes
        else:
            audio = np.zeros(0, np.float32)
            have = 0
            for i, r in enumerate(self.results):
                a = decode(r.codes).astype(np.float32)  # prefix + new frames
                if i == 0:
                    audio = a
                else:
                    seam = r.n_prefix * HOP  # where the new frames start in ``a``
                    # Blend in the middle of the context, where both decodes have full context.
                    back = min(r.n_prefix * HOP // 2, int(0.5 * SAMPLE_RATE))
                    xf = min(int(crossfade_seconds * SAMPLE_RATE), r.n_prefix * HOP - back)
                    cut_total = have * HOP - back  # seam position in ``audio`` minus ``back``
                    head = audio[: cut_total]
                    tail = a[seam - back - xf:]
                    audio = crossfade_join(head, tail, xf)
                have += (r.codes if i == 0 else r.new_codes).shape[0]
                self.rep("decode", (i + 1) / len(self.results))
            codes = self.codes
        t_fit = time.monotonic()
        if p.length.target_samples is not None:
            audio = fit_length(audio, p.length.target_samples)
        audio = np.asarray(audio, dtype=np.float32).reshape(1, -1)
        now = time.monotonic()
        timings = dict(p.timings)
        timings.update(generate=self.gen_seconds, decode=t_fit - t_dec, total=now - self.t0 + timings.get("prepare", 0.0))
        info = dict(p.info)
        info.update(frames=int(codes.shape[0]), rounds=self.round, items=len(self.results),
                    stopped_by_eos=[bool(r.stopped_by_eos) for r in self.results],
                    exact_length=p.length.exact, sampling=p.sampling.__dict__.copy())
        self.rep("finish", 1.0, int(codes.shape[0]), int(codes.shape[0]))
        return AudioResult(audio=audio, sample_rate=SAMPLE_RATE, seed=p.seed, codes=codes.astype(np.int64),
                           task=self.task, timings=timings, info=info)


# --- request preparation -------------------------------------------------------------------------------

def _check_type(req: Any, cls: type, name: str) -> None:
    if not isinstance(req, cls):
        raise InvalidInput(f"wanted a {cls.__name__}, got {type(req).__name__}", field="request", wanted=name)


def prepare_speech(eng: Any, req: SpeechRequest, rep: Reporter) -> TaskPlan:
    """Validate a speech request, encode its reference voice, split its text into chunks."""
    t0 = time.monotonic()
    _check_type(req, SpeechRequest, "SpeechRequest")
    text = _text(req.text, "text")
    sampling, seed = resolve_sampling(req.sampling, "speech")
    window = eng.window_frames
    lp = plan_length(req.length, default_min_frames=DEFAULT_MIN_FRAMES, default_max_frames=window)
    transcript = _text(req.reference_text, "reference_text", max_chars=2000)
    if req.voice_codes is not None:
        codes = check_voice_codes(req.voice_codes)
        source = "voice_codes"
    elif req.reference_audio:
        rep("encode", 0.0)
        codes = eng.encode_reference(req.reference_audio, field="reference_audio")
        source = "reference_audio"
    else:
        raise InvalidInput("give a reference recording or a saved voice", field="reference_audio",
                           wanted="reference_audio or voice_codes")
    max_ref = int(REFERENCE_MAX_SECONDS * FRAMES_PER_SECOND)
    trimmed = codes.shape[0] >= max_ref - 1  # load_reference trims long clips: the transcript says more
    if codes.shape[0] > max_ref:
        codes = codes[:max_ref]
    max_chars = int(getattr(eng, "speech_max_chars", SPEECH_MAX_CHARS))
    # One chunk per sentence (long sentences cut at clauses), so every sentence end gets its pause.
    chunks = split_text(text, max_chars, pack=False)
    if not chunks:
        raise InvalidInput("is empty", field="text", wanted="non-empty text")
    # Frame budget per chunk.
    if lp.exact:
        pause_frames = SPEECH_PAUSE_SECONDS * FRAMES_PER_SECOND * (len(chunks) - 1)
        budget = max(len(chunks), int(math.ceil(lp.target_samples / HOP - pause_frames)))
        weights = np.array([max(1, len(c)) for c in chunks], dtype=np.float64)
        alloc = np.floor(budget * weights / weights.sum()).astype(int)
        alloc[: budget - alloc.sum()] += 1
        alloc = np.maximum(alloc, 1)
        if int(alloc.max()) > window:
            # Too long for one window per chunk: split further.
            n_more = int(math.ceil(budget / window))
            chunks = split_text(text, max(1, int(len(text) / max(n_more * 2, 1))), pack=False)
            weights = np.array([max(1, len(c)) for c in chunks], dtype=np.float64)
            alloc = np.floor(budget * weights / weights.sum()).astype(int)
            alloc[: budget - alloc.sum()] += 1
            alloc = np.maximum(alloc, 1)
            # Still longer than a window (a short text for a long length): each chunk gets at most a
            # window and the exact-length fit pads the rest with silence, so what submit accepted runs.
            alloc = np.minimum(alloc, window)
        frames = [(int(a), int(a)) for a in alloc]
    else:
        length = req.length or Length()
        frames = speech_chunk_frames(chunks, transcript, int(codes.shape[0]), lp, trimmed=trimmed,
                                     explicit_min=length.min_seconds is not None,
                                     explicit_max=length.max_seconds is not None)
    prompts_ = [build_speech_prompt(eng.tok, c, transcript, codes, placeholder_id=eng.placeholder_id)
                for c in chunks]
    plan = TaskPlan(task="speech", sampling=sampling, seed=seed, length=lp, kind="chunks", prompts=prompts_,
                    chunk_frames=frames,
                    info={"chunks": len(chunks), "voice_frames": int(codes.shape[0]), "voice_source": source,
                          "chunk_max_frames": [mx for _, mx in frames]})
    plan.timings["prepare"] = time.monotonic() - t0
    rep("prepare", 1.0)
    return plan


def frames_per_char(transcript: str, voice_frames: int, *, trimmed: bool = False) -> float:
    """The reference's speaking rate: codec frames per character of its transcript (spaces count once)."""
    chars = max(1, len(normalize_space(transcript)))
    rate = voice_frames / chars
    return max(rate, SPEECH_FLOOR_FRAMES_PER_CHAR) if trimmed else rate


def speech_chunk_frames(chunks: Sequence[str], transcript: str, voice_frames: int, lp: LengthPlan, *,
                        trimmed: bool = False, explicit_min: bool = False, explicit_max: bool = False
                        ) -> list[tuple[int, int]]:
    """(min, max) frames of each speech chunk when no exact length is asked: bounded by the length plan,
    and (unless the caller set them) by the chunk's length at the reference's speaking rate.

    A ``max_seconds`` / ``min_seconds`` the caller set bounds the whole text: the chunks share it by their
    length in characters, after the pauses between them (a voiceover asks for at most its slot)."""
    rate = frames_per_char(transcript, voice_frames, trimmed=trimmed)
    sizes = [max(1, len(normalize_space(c))) for c in chunks]
    pauses = SPEECH_PAUSE_SECONDS * FRAMES_PER_SECOND * (len(chunks) - 1)
    total = float(sum(sizes))
    out = []
    for c, size in zip(chunks, sizes):
        estimate = len(normalize_space(c)) * rate
        share = size / total
        if explicit_max:
            hi = max(1, int((lp.max_frames - pauses) * share))
        else:
            hi = min(lp.max_frames, int(math.ceil(estimate * SPEECH_RATE_MARGIN)) + SPEECH_RATE_SLACK_FRAMES)
        if explicit_min:
            lo = max(0, int(math.ceil((lp.min_frames - pauses) * share)))
        else:
            lo = min(lp.min_frames, int(estimate * SPEECH_MIN_SHARE))
        out.append((max(0, min(lo, hi)), max(1, hi)))
    return out


def music_target_samples(req: MusicRequest) -> int | None:
    """Bars at a tempo give a target length (4/4; 120 BPM when no tempo is given)."""
    if req.bars is None:
        return None
    tempo = 120.0 if req.tempo_bpm is None else float(req.tempo_bpm)
    secs = Fraction(int(req.bars) * 4 * 60) / Fraction(tempo).limit_denominator(10**6)
    if secs > MAX_SECONDS:
        raise InvalidInput(f"{float(secs):.1f} s is too long", field="bars", wanted=f"at most {MAX_SECONDS:g} s")
    return int(round(secs * SAMPLE_RATE))


def prepare_music(eng: Any, req: MusicRequest, rep: Reporter) -> TaskPlan:
    t0 = time.monotonic()
    _check_type(req, MusicRequest, "MusicRequest")
    caption = _text(req.caption, "caption", required=False, max_chars=4000)
    if req.tempo_bpm is not None:
        bpm = _num(req.tempo_bpm, "tempo_bpm")
        if not 20 <= bpm <= 400:
            raise InvalidInput(f"{bpm} BPM is out of range", field="tempo_bpm", wanted="20 <= tempo_bpm <= 400")
    if req.bars is not None:
        if isinstance(req.bars, bool) or not isinstance(req.bars, (int, np.integer)) or not 1 <= int(req.bars) <= 1000:
            raise InvalidInput(f"{req.bars!r} is out of range", field="bars", wanted="integer 1..1000")
    key = None
    if req.key is not None:
        key = _text(req.key, "key", max_chars=40)
    if not caption and req.tempo_bpm is None and key is None:
        raise InvalidInput("is empty", field="caption", wanted="non-empty text")
    sampling, seed = resolve_sampling(req.sampling, "music")
    splice = None
    if getattr(req, "continue_audio", None) is not None or getattr(req, "loop", False):
        from .continuation import plan_splice

        splice = plan_splice(eng, req, eng.window_frames, rep)  # validates; the model makes splice.frames
        lp = LengthPlan(splice.frames * HOP, splice.frames, splice.frames)
    else:
        lp = plan_length(req.length, default_target_samples=music_target_samples(req),
                         default_max_frames=eng.window_frames)
    text = music_caption(caption, req.tempo_bpm, key, req.bars)
    prompt = build_music_prompt(eng.tok, text)
    plan = TaskPlan(task="music", sampling=sampling, seed=seed, length=lp, kind="windows", prompts=[prompt],
                    info={"caption": text})
    if splice is not None:
        plan.prefix = splice.prefix
        plan.info["splice"] = splice.plan.to_dict()
    plan.timings["prepare"] = time.monotonic() - t0
    rep("prepare", 1.0)
    return plan


def prepare_video(eng: Any, req: VideoScoreRequest, rep: Reporter) -> TaskPlan:
    t0 = time.monotonic()
    _check_type(req, VideoScoreRequest, "VideoScoreRequest")
    if req.mode not in ("vision", "reference"):
        raise InvalidInput(f"unknown mode {req.mode!r}", field="mode", wanted="'vision' or 'reference'")
    if req.mode == "vision" and not eng.has_vision:
        raise InvalidInput("the model was loaded without its vision tower", field="mode", wanted="'reference'")
    caption = _text(req.caption, "caption", required=False, max_chars=4000)
    fps = _num(req.frames_per_second, "frames_per_second")
    if not 0 < fps <= 30:
        raise InvalidInput(f"{fps} is out of range", field="frames_per_second", wanted="0 < frames_per_second <= 30")
    if isinstance(req.max_frames, bool) or not isinstance(req.max_frames, (int, np.integer)) or not 1 <= req.max_frames <= 256:
        raise InvalidInput(f"{req.max_frames!r} is out of range", field="max_frames", wanted="integer 1..256")
    t_in = _num(req.in_seconds, "in_seconds")
    if t_in < 0:
        raise InvalidInput(f"{t_in} is negative", field="in_seconds", wanted="in_seconds >= 0")
    sampling, seed = resolve_sampling(req.sampling, "video_score")
    duration = eng.video_duration(req.video, field="video")
    if req.out_seconds is None:
        t_out = duration
    else:
        t_out = _num(req.out_seconds, "out_seconds")
        if t_out <= t_in:
            raise InvalidInput("out_seconds must be after in_seconds", field="out_seconds", wanted="out > in")
        if t_out > duration + END_TOLERANCE_S:  # as the daemon's probe at submit
            raise InvalidInput(f"{t_out} s is past the end of the video ({duration:.3f} s)", field="out_seconds",
                               wanted=f"out_seconds <= {duration:.3f}")
    if t_in >= duration:
        raise InvalidInput(f"{t_in} s is past the end of the video ({duration:.3f} s)", field="in_seconds",
                           wanted=f"in_seconds < {duration:.3f}")
    clip = t_out - t_in
    if clip > MAX_SECONDS:
        raise InvalidInput(f"{clip:.1f} s is too long", field="out_seconds", wanted=f"a clip of at most {MAX_SECONDS:g} s")
    default_target = int(round(Fraction(str(round(clip, 9))) * SAMPLE_RATE))
    lp = plan_length(req.length, default_target_samples=max(1, default_target), default_max_frames=eng.window_frames)
    info: dict[str, Any] = {"mode": req.mode, "clip_seconds": clip, "caption": caption}
    if req.mode == "reference":
        prompt = build_video_prompt(eng.tok, caption)
    else:
        rep("encode", 0.0)
        video = eng.video_input(req.video, t_in, t_out, fps, int(req.max_frames), field="video")
        prompt = build_video_prompt(eng.tok, caption, video, video_pad_id=eng.video_token_id)
        t, h, w = video.grid
        info.update(video_grid=[t, h, w], video_tokens=video.n_tokens)
    plan = TaskPlan(task="video_score", sampling=sampling, seed=seed, length=lp, kind="windows", prompts=[prompt],
                    info=info)
    plan.timings["prepare"] = time.monotonic() - t0
    rep("prepare", 1.0)
    return plan


PREPARE = {"speech": prepare_speech, "music": prepare_music, "video_score": prepare_video}
TASK_OF = {SpeechRequest: "speech", MusicRequest: "music", VideoScoreRequest: "video_score"}


def task_of(req: Any) -> str:
    for cls, name in TASK_OF.items():
        if isinstance(req, cls):
            return name
    raise InvalidInput(f"unknown request type {type(req).__name__}", field="request",
                       wanted=", ".join(cls.__name__ for cls in TASK_OF))


def register_task(name: str, request_type: type, prepare: Callable[[Any, Any, Reporter], TaskPlan],
                  sampling_defaults: dict[str, Any] | None = None) -> None:
    """Teach the engine a task it does not know yet: ``prepare(engine, request, reporter)`` turns a
    ``request_type`` into a :class:`TaskPlan` (the daemon registers the tasks of client/tasks/ that bring
    their own preparation). Sampling defaults: the task's, else music's."""
    PREPARE[name] = prepare
    TASK_OF[request_type] = name
    DEFAULTS.setdefault(name, dict(sampling_defaults or DEFAULTS["music"]))
