"""Take the panel's screenshots for docs/gui.md: a real panel under Xvfb (X11) against a real daemon on
the tiny model, in a throwaway UNIMOE_AUDIO_HOME.

    python docs/screenshots.py [OUT_DIR]        # default: docs/img

Needs Xvfb (Debian: apt install xvfb) and libxcb-cursor0; without a DISPLAY it re-runs itself under
``xvfb-run``. PNGs are saved with an 8-bit palette to stay small.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE / "img").resolve()
    if not os.environ.get("DISPLAY") and not os.environ.get("UNIMOE_SHOTS_CHILD"):
        if not shutil.which("xvfb-run"):
            print("needs Xvfb: apt install xvfb (or run with a DISPLAY)", file=sys.stderr)
            return 2
        env = {**os.environ, "UNIMOE_SHOTS_CHILD": "1"}
        return subprocess.call(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, __file__, str(out)],
                               env=env)
    home = Path(tempfile.mkdtemp(prefix="unimoe-shots-"))
    for k in [k for k in os.environ if k.startswith("UNIMOE_AUDIO_")]:
        del os.environ[k]
    os.environ.update(UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_MODEL="tiny", UNIMOE_AUDIO_DEVICE="cpu",
                      UNIMOE_AUDIO_OSC_PORT="0", QT_QPA_PLATFORM="xcb")
    try:
        return shoot(out, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def shoot(out: Path, home: Path) -> int:
    from PySide6.QtGui import QImage
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from unimoe_audio.client.client import Client
    from unimoe_audio.client.settings import load_settings
    from unimoe_audio.gui.panel import Panel

    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    Client(settings, auto_start=True, notice=lambda m: None).close()  # a daemon in the background

    app = QApplication.instance() or QApplication(["unimoe-audio-panel"])
    app.setStyle("Fusion")
    panel = Panel(settings, auto_start=False, status_interval_ms=500)
    panel.resize(700, 880)
    panel.show()

    def wait(pred, what: str, timeout: float = 300.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            QTest.qWait(50)
        raise SystemExit(f"timed out waiting for {what}")

    def save(name: str) -> None:
        QTest.qWait(300)
        img = panel.grab().toImage().convertToFormat(QImage.Format.Format_Indexed8)
        path = out / name
        img.save(str(path), "PNG", 9)
        print(f"{path} ({path.stat().st_size // 1024} KiB)")

    def done(job_id: str) -> bool:
        r = panel.jobs.get(job_id)
        return r is not None and r.final

    def submit_music(caption: str, seconds: float, seed: int) -> str:
        before = {r.job_id for r in panel.jobs.rows()}
        panel.tabs.setCurrentWidget(panel.music)
        panel.music.caption.setPlainText(caption)
        panel.music.seconds.setValue(seconds)
        panel.music.seed.setValue(seed)
        panel.generate()
        wait(lambda: any(r.job_id not in before for r in panel.jobs.rows()), "the new row")
        return next(r.job_id for r in panel.jobs.rows() if r.job_id not in before)

    wait(lambda: panel.online and panel.status is not None, "the panel to connect")
    # takes: one request, three takes (the last with a new seed), the first one playing
    first = submit_music("warm analog synth arpeggio, 96 BPM, A minor", 3.0, 7)
    wait(lambda: done(first), "take 1")
    panel.select_job(first)
    panel.regenerate(same_seed=False)
    wait(lambda: len(panel.jobs.rows()) == 2 and all(r.final for r in panel.jobs.rows()), "take 2")
    other = submit_music("tense low strings, slow pulse", 2.0, 3)
    wait(lambda: done(other), "the other request")
    panel.select_job(first)
    panel.set_kept(True)
    panel.toggle_play()
    wait(lambda: panel.player.fraction() > 0.35, "the playhead")
    save("panel-takes.png")
    panel.player.stop()

    # a running take: its growing preview and a readable progress bar on the selected row
    long = submit_music("ambient drone with soft bells", 120.0, 5)
    wait(lambda: (panel.jobs.get(long).peaks is not None and panel.jobs.get(long).fraction > 0.05), "a preview")
    panel.select_job(long)
    save("panel-preview.png")
    panel.cancel_selected()
    wait(lambda: done(long), "the cancel")

    # speech: a reference recording (dropped or picked) that can be saved as a voice
    ref = home / "narrator.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(ref), "Good evening, and welcome back."], check=True)
    panel.tabs.setCurrentWidget(panel.speech)
    panel.speech.text.setPlainText("The night train leaves at nine.")
    panel.speech.use_reference(str(ref))
    panel.select_job(other)
    panel.speech.transcript.setText("Good evening, and welcome back.")
    save("panel-speech.png")

    # no dead ends: the daemon stops; Generate is off with the reason, and the panel keeps looking
    panel.tabs.setCurrentWidget(panel.music)
    panel.backend.client.shutdown(wait=30)
    wait(lambda: not panel.online, "the panel to notice")
    panel.generate()
    save("panel-offline.png")
    panel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
