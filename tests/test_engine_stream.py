"""Streaming previews: Progress.partial_audio grows while generating, across continuation windows."""
from __future__ import annotations

import numpy as np
import pytest

from unimoe_audio.model.requests import Length, MusicRequest, Progress, SamplingParams


@pytest.fixture(scope="module")
def eng(tiny_engine):
    return tiny_engine(window_frames=60)


def run(eng, stream_every):
    previews: list[np.ndarray] = []

    def cb(p: Progress) -> None:
        if p.partial_audio is not None:
            previews.append(np.asarray(p.partial_audio).reshape(-1))

    req = MusicRequest("slow strings", length=Length(seconds=2.0), sampling=SamplingParams(seed=5),
                       stream_every=stream_every)
    return eng.music(req, cb), previews


def test_previews_grow_and_agree_with_the_final_audio(eng):
    result, previews = run(eng, 0.4)
    assert len(previews) >= 3  # 2 s over two continuation windows
    lengths = [p.size for p in previews]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    final = result.audio.reshape(-1)
    head = previews[0].size // 2  # away from the preview's open end, the decode is the same
    assert np.abs(previews[0][:head] - final[:head]).max() < 1e-4


def test_no_previews_unless_asked_and_same_audio(eng):
    plain, previews = run(eng, None)
    assert previews == []
    streamed, _ = run(eng, 0.4)
    np.testing.assert_array_equal(plain.audio, streamed.audio)  # previews never change the result
