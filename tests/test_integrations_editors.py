"""The real editors open what we write: Shotcut 22.12 and Kdenlive 22.12 (Debian) under Xvfb.

A scored edit (picture clips with gaps, an original dialogue track, the score track) is written as MLT and as a
Kdenlive project; each editor opens its file, a screenshot is taken, and the editor saves the project itself
(Shotcut: Ctrl+S; Kdenlive: Save As); the file *the editor wrote* is read back and every picture and audio clip
must be at its record frame with its length and source offset: what the editor holds, not what we wrote.
(Before the background track, Shotcut stretched the first picture element: the first clip showed 242 frames.)
"""
from __future__ import annotations

import shutil
import sys
from fractions import Fraction
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _editor_host import XSession, kdenlive_open_and_save, missing_tools, shotcut_open_and_save  # noqa: E402
from test_integrations_interchange import DIALOG, SHOTS, make_video, make_wav, scored  # noqa: E402

from unimoe_audio.integrations.interchange import write_timeline  # noqa: E402
from unimoe_audio.integrations.mlt import read_mlt  # noqa: E402

pytestmark = [pytest.mark.host, pytest.mark.timeout(900)]
RATE, START = Fraction(24000, 1001), "01:00:00:00"
SHOTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "img"


def need(*tools: str) -> None:
    gone = missing_tools(*tools)
    if gone:
        pytest.fail(f"{', '.join(gone)} missing: apt-get install shotcut kdenlive xvfb openbox xdotool imagemagick "
                    "dbus-daemon (.ci/run does)", pytrace=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("editors")
    make_video(folder / "clip.mp4")
    make_wav(folder / "dialog.wav", 48000 * 4)
    edit, cues = scored(folder, folder, RATE, START)
    return folder, edit, cues


def expected() -> dict[str, list[tuple[int, int, int, str]]]:
    return {"video": [(rec, n, src, "clip.mp4") for _, rec, n, src in SHOTS],
            "dialog": [(DIALOG[0], DIALOG[1], 0, "dialog.wav")],
            "score": [(rec, n, 0, f"r-00{i}.wav") for i, (_, rec, n, _) in enumerate(SHOTS, 1)]}


def held(layout) -> dict[str, list[tuple[int, int, int, str]]]:
    out: dict[str, list] = {}
    for lane in layout.lanes:
        names = {Path(p.path or "?").name for p in lane.items}
        key = "video" if lane.kind == "video" else ("dialog" if names == {"dialog.wav"} else "score")
        assert key not in out, f"two {key} tracks: {layout.lanes}"
        out[key] = sorted((p.record, p.frames, p.src_in, Path(p.path or "?").name) for p in lane.items)
    return out


def keep_screenshot(shot: Path, name: str) -> None:
    """Refresh the docs' screenshot when asked (UNIMOE_DOCS_SCREENSHOTS=1), never otherwise."""
    import os

    if os.environ.get("UNIMOE_DOCS_SCREENSHOTS") == "1":
        SHOTS_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SHOTS_DIR / name)


def test_shotcut_shows_every_clip_in_place(project, tmp_path):
    need("shotcut")
    folder, edit, cues = project
    mlt = write_timeline(edit, cues, tmp_path / "scored.mlt")
    assert held(read_mlt(mlt)) == expected()  # what we wrote
    with XSession(tmp_path / "x") as x:
        saved = shotcut_open_and_save(x, mlt, tmp_path / "shotcut.png")
        log = x.log("shotcut.log")
    text = saved.read_text()
    assert "Shotcut version 22" in text or "shotcut" in text.lower(), "Shotcut did not rewrite the file"
    assert held(read_mlt(saved)) == expected(), log[-3000:]
    keep_screenshot(tmp_path / "shotcut.png", "shotcut-scored.png")


def test_kdenlive_opens_the_project_with_every_clip_in_place(project, tmp_path):
    need("kdenlive", "dbus-run-session")
    folder, edit, cues = project
    kd = write_timeline(edit, cues, tmp_path / "scored.kdenlive")
    assert held(read_mlt(kd)) == expected()
    with XSession(tmp_path / "x") as x:
        saved = kdenlive_open_and_save(x, kd, tmp_path / "kdenlive.png", tmp_path / "saved.kdenlive")
        log = x.log("kdenlive.log")
    assert "without bin reference" not in log and "kdenlive:docproperties.version" in saved.read_text()
    back = read_mlt(saved)
    assert back.rate == RATE
    assert held(back) == expected(), log[-3000:]
    keep_screenshot(tmp_path / "kdenlive.png", "kdenlive-scored.png")
