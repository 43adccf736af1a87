"""The mistakes a new user makes, against a real daemon on the tiny model: each one answers with one
line on stderr and its documented exit code, before any work is done and without side effects.

The daemon is limited to two allowed roots under the test's temp folder, so a path outside them is
refused the way /etc would be, without needing a protected folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _client_harness import Daemon, cli, make_reference_speech, make_video  # noqa: E402
from _content import check_audio, check_sidecar  # noqa: E402

pytestmark = pytest.mark.timeout(1800)  # last resort: the waits inside follow progress


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    (base / "inside").mkdir()
    (base / "outside").mkdir()
    return base


@pytest.fixture(scope="module")
def env(tmp_path_factory, roots):
    home = tmp_path_factory.mktemp("home")
    d = Daemon(home, UNIMOE_AUDIO_ALLOWED_ROOTS=str(roots / "inside"))
    yield d.env
    d.stop()


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("unimoe-audio: error:")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def test_jobs_wait_timeout_is_one_line_and_exit_5(env):
    job = cli(env, "music", "a long piece", "--seconds", "300", "--no-wait", "--json").ok().json()["job"]
    try:
        r = cli(env, "jobs", "wait", job, "--timeout", "1")
        assert r.code == 5, (r.code, r.err)
        line = one_line_error(r.err)
        assert job in line and "did not finish within 1 s" in line
        assert "keeps running" in line
        # --json gets the error as one JSON document too
        r = cli(env, "jobs", "wait", job, "--timeout", "0.5", "--json")
        assert r.code == 5 and r.json()["exit_code"] == 5
    finally:
        cli(env, "jobs", "cancel", job).ok()


def test_refused_output_creates_no_folder(env, roots):
    target = roots / "outside" / "new_dir" / "deeper" / "out.wav"
    r = cli(env, "music", "x", "--seconds", "0.5", "-o", str(target))
    assert r.code == 2, (r.code, r.err)
    assert "path_not_allowed" in one_line_error(r.err)
    assert not (roots / "outside" / "new_dir").exists()


def test_accepted_output_in_a_new_folder_is_created_by_the_daemon(env, roots):
    target = roots / "inside" / "made" / "by" / "daemon" / "cue.wav"
    cli(env, "music", "x", "--seconds", "0.5", "-o", str(target)).ok()
    check_audio(target, seconds=0.5)
    assert check_sidecar(target, task="music")["request"]["spec"]["caption"] == "x"


def test_output_under_a_file_is_refused_at_submit(env, roots):
    blocker = roots / "inside" / "a_file"
    blocker.write_text("not a folder")
    r = cli(env, "music", "x", "--seconds", "0.5", "-o", str(blocker / "sub" / "out.wav"))
    assert r.code == 2, (r.code, r.err)
    assert "output.folder" in one_line_error(r.err)


def test_text_file_as_reference_audio_is_exit_2_naming_the_field(env, roots):
    fake = roots / "inside" / "notes.wav"
    fake.write_text("this is a text file, not a recording\n" * 20)
    r = cli(env, "speak", "Hello.", "--ref-audio", str(fake), "--ref-text", "Hello there.", "--seconds", "0.5")
    assert r.code == 2, (r.code, r.err)
    line = one_line_error(r.err)
    assert "media_error" in line and "spec.reference_audio" in line


def test_video_end_past_the_end_is_exit_2_naming_the_field(env, roots):
    video = make_video(roots / "inside" / "clip.mp4", seconds=2.0)
    r = cli(env, "score", str(video), "--in", "0.5", "--out", "9")
    assert r.code == 2, (r.code, r.err)
    line = one_line_error(r.err)
    assert "spec.out_seconds" in line and "past the end of the video" in line
    r = cli(env, "score", str(video), "--in", "5")
    assert r.code == 2 and "spec.in_seconds" in one_line_error(r.err)


def test_unreadable_video_is_exit_2_naming_the_field(env, roots):
    bad = roots / "inside" / "broken.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    r = cli(env, "score", str(bad), "--caption", "x", "--out", "1")
    assert r.code == 2, (r.code, r.err)
    line = one_line_error(r.err)
    assert "media_error" in line and "spec.video" in line
    audio_only = make_reference_speech(roots / "inside" / "speech.wav")
    r = cli(env, "score", str(audio_only), "--out", "1")
    assert r.code == 2 and "no video stream" in one_line_error(r.err)


def test_hints_name_real_verbs(env):
    r = cli(env, "speak", "Hi.", "--voice", "nobody", "--seconds", "0.5")
    assert r.code == 2
    line = one_line_error(r.err)
    assert "'voices ls'" in line
    verb = line.split("'voices ")[1].split("'")[0]
    assert cli(env, "voices", verb).code == 0  # the hinted verb exists
    r = cli(env, "jobs", "wait", "0123456789abcdef")
    assert r.code == 2 and "'jobs ls'" in one_line_error(r.err)


def test_progress_lines_when_stderr_is_not_a_terminal(env, roots):
    # stderr is a pipe here: no bars, one plain line per further 10%
    r = cli(env, "music", "x", "--seconds", "2", "-o", str(roots / "inside" / "progress.wav")).ok()
    lines = [ln for ln in r.err.splitlines() if ln.startswith("unimoe-audio: music: ")]
    percents = [int(ln.split(": ")[2].split("%")[0]) for ln in lines]
    assert percents == sorted(set(percents)) and percents[-1] == 100, r.err
    assert len(percents) >= 5, r.err  # a 2 s render passes most deciles
    assert all(p % 10 == 0 for p in percents)
    quiet = cli(env, "music", "x", "--seconds", "0.5", "-q", "-o", str(roots / "inside" / "quiet.wav")).ok()
    assert "%" not in quiet.err
