"""Running a plan: a :class:`Job` yields generation items round by round (speech: one item per chunk;
music and video: continuation windows), then decodes and joins the audio (pauses, crossfades at the
seams) and fits it to the exact target length.

Windows. One generation holds at most ``window_frames`` frames (981 = the reference's 1000 tokens
minus the delay tail, about 19.6 s). Longer music is generated window by window: each further window
is prefilled with the last ``context_frames`` frames of the previous one as already-generated frames
(continuation), and the decoded windows are crossfaded at the seams.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from ..generation import GenItem, GenResult
from ..length import FRAMES_PER_SECOND, HOP, SAMPLE_RATE
from ..requests import AudioResult
from .base import NUM_CODEBOOKS, SPEECH_PAUSE_SECONDS, Reporter, TaskPlan


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


# --- streamed previews

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
    def assemble(self, decode: Callable[[np.ndarray], np.ndarray], fit_length: Callable[..., np.ndarray] | None,
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
        # The length is fitted once, at the rate the audio is delivered at: here (16 kHz) for the library's
        # callers; a caller that renders at another rate (the daemon) passes no ``fit_length`` and fits there.
        if p.length.target_samples is not None and fit_length is not None:
            audio = fit_length(audio, p.length.target_samples)
        audio = np.asarray(audio, dtype=np.float32).reshape(1, -1)
        now = time.monotonic()
        timings = dict(p.timings)
        timings.update(generate=self.gen_seconds, decode=t_fit - t_dec, total=now - self.t0 + timings.get("prepare", 0.0))
        info = dict(p.info)
        info.update(frames=int(codes.shape[0]), rounds=self.round, items=len(self.results),
                    stopped_by_eos=[bool(r.stopped_by_eos) for r in self.results],
                    exact_length=p.length.exact, target_samples=p.length.target_samples,
                    length_fitted=p.length.exact and fit_length is not None, sampling=p.sampling.__dict__.copy())
        self.rep("finish", 1.0, int(codes.shape[0]), int(codes.shape[0]))
        return AudioResult(audio=audio, sample_rate=SAMPLE_RATE, seed=p.seed, codes=codes.astype(np.int64),
                           task=self.task, timings=timings, info=info)
