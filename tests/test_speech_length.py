"""Speech without a target length on the tiny random model (which never predicts end-of-speech): each
sentence chunk is capped at its length at the reference's speaking rate, not run to the whole window,
and every sentence end gets the pause between chunks."""
from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest

from unimoe_audio.model.requests import Length, SamplingParams, SpeechRequest
from unimoe_audio.model.tasks import SPEECH_PAUSE_SECONDS
from unimoe_audio.model.text_split import split_text

SR = 16000
REF_TEXT = "This is my voice, speaking clearly."


@pytest.fixture(scope="module")
def eng(tiny_engine):
    # A 300-frame (6 s) window: long enough that a cap from the speaking rate is visibly shorter.
    return tiny_engine(window_frames=300)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "ref.wav"
    subprocess.run(["espeak-ng", "-w", str(path), REF_TEXT], check=True)
    return path


def zero_runs(audio: np.ndarray, at_least: int) -> int:
    """How many runs of exact zeros of at least ``at_least`` samples (the inserted pauses)."""
    z = np.concatenate([[0], (audio == 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(z))
    return int(sum(1 for a, b in zip(edges[::2], edges[1::2]) if b - a >= at_least))


def test_speech_without_length_stops_at_the_speaking_rate_cap(eng, ref, one_thread):
    text = "Good morning to you."
    res = eng.speech(SpeechRequest(text=text, reference_audio=str(ref), reference_text=REF_TEXT,
                                   sampling=SamplingParams(seed=3)))
    voice_frames = res.info["voice_frames"]
    rate = voice_frames / len(REF_TEXT)  # frames per character of the reference transcript
    cap = math.ceil(len(text) * rate * 1.5) + 50
    assert res.info["chunk_max_frames"] == [cap]
    assert cap < eng.window_frames  # the cap, not the window, bounds it
    assert res.info["frames"] <= cap
    assert res.audio.shape[1] <= cap * 320


def test_an_explicit_max_is_kept(eng, ref, one_thread):
    res = eng.speech(SpeechRequest(text="Hi.", reference_audio=str(ref), reference_text=REF_TEXT,
                                   length=Length(max_seconds=0.5), sampling=SamplingParams(seed=3)))
    assert res.info["chunk_max_frames"] == [25] and res.info["frames"] <= 25


def test_an_explicit_max_bounds_the_whole_text_of_several_sentences(eng, ref, one_thread):
    # a voiceover cue asks for at most its slot: the sentences share it, with the pause between them
    res = eng.speech(SpeechRequest(text="Hello? Who is this?", reference_audio=str(ref), reference_text=REF_TEXT,
                                   length=Length(max_seconds=1.84), sampling=SamplingParams(seed=3)))
    assert res.info["chunks"] == 2
    assert sum(res.info["chunk_max_frames"]) + SPEECH_PAUSE_SECONDS * 50 <= 92
    assert res.audio.shape[1] <= round(1.84 * SR)


def test_every_sentence_end_gets_a_pause(eng, ref, one_thread):
    text = "One. Two words. Three more words! Is this four? Five is the end."
    assert len(text) < 200 and len(split_text(text, 200)) == 1  # one packed chunk before
    res = eng.speech(SpeechRequest(text=text, reference_audio=str(ref), reference_text=REF_TEXT,
                                   sampling=SamplingParams(seed=4)))
    assert res.info["chunks"] == 5
    pause = int(SPEECH_PAUSE_SECONDS * SR)
    assert zero_runs(res.audio.reshape(-1), pause) == 4


def test_split_text_without_packing_keeps_sentences_apart():
    assert split_text("One. Two words. Three!", 200, pack=False) == ["One.", "Two words.", "Three!"]
    assert split_text("One. Two words. Three!", 200) == ["One. Two words. Three!"]
    long = "a clause here, " * 20 + "and the end."
    assert all(len(c) <= 60 for c in split_text(long, 60, pack=False))
