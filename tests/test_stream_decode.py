"""Streamed previews decode only the new frames: the work is linear in the length, and the previews
still equal the full decode of the same codes (the DAC sees enough context at every seam)."""
from __future__ import annotations

import numpy as np
import pytest

from unimoe_audio.model.requests import Length, MusicRequest, Progress, SamplingParams
from unimoe_audio.model.tasks import STREAM_CONTEXT_FRAMES, IncrementalDecode


@pytest.fixture(scope="module")
def eng(tiny_engine):
    return tiny_engine(window_frames=120)


def test_incremental_previews_equal_the_full_decode_at_linear_cost(eng, one_thread):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, size=(400, 12))
    calls: list[int] = []

    def decode(c: np.ndarray) -> np.ndarray:
        calls.append(int(c.shape[0]))
        return eng.decode_codes(c)

    inc = IncrementalDecode(decode)
    step = 25
    for n in range(step, 401, step):
        preview = inc(codes[:n])
        full = eng.decode_codes(codes[:n])
        assert preview.shape == full.shape
        assert np.abs(preview - full).max() < 1e-4, n
    # each call decoded its new frames plus at most two contexts, never everything so far
    assert max(calls) <= step + 2 * STREAM_CONTEXT_FRAMES
    assert inc.decoded_frames <= 400 + len(calls) * 2 * STREAM_CONTEXT_FRAMES
    quadratic = sum(range(step, 401, step))
    assert inc.decoded_frames < quadratic / 4


def test_streamed_music_previews_follow_the_final_audio(eng, one_thread):
    previews: list[np.ndarray] = []

    def cb(p: Progress) -> None:
        if p.partial_audio is not None:
            previews.append(np.asarray(p.partial_audio).reshape(-1))

    req = MusicRequest("slow strings", length=Length(seconds=4.0), sampling=SamplingParams(seed=5), stream_every=0.5)
    res = eng.music(req, cb)
    final = res.audio.reshape(-1)
    assert len(previews) >= 6
    sizes = [p.size for p in previews]
    assert sizes == sorted(sizes)
    # inside the first window (before any continuation seam) a preview is the final audio
    head = min(previews[0].size, 100 * 320) - 2 * STREAM_CONTEXT_FRAMES * 320
    assert np.abs(previews[0][:head] - final[:head]).max() < 1e-4
    plain = eng.music(MusicRequest("slow strings", length=Length(seconds=4.0), sampling=SamplingParams(seed=5)))
    np.testing.assert_array_equal(plain.audio, res.audio)  # previews never change the result
