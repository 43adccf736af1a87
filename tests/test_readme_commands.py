"""The README's two set-up commands, as written: the first one makes a WAV, the second is what CI runs."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", text, re.S)
    assert block, f"README has no {marker} block"
    return block.group(1).strip()


def test_first_command_makes_a_wav_on_the_tiny_model(tmp_path):
    install, _, run = readme_command("first-command").partition(" && ")
    assert install.startswith("pip install") and run.startswith("unimoe-audio ")
    env = {**os.environ, "UNIMOE_AUDIO_HOME": str(tmp_path / "home"), "UNIMOE_AUDIO_OSC_PORT": "0"}
    try:
        proc = subprocess.run(shlex.split(run), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert "TINY" in proc.stderr and "noise" in proc.stderr  # says so when no real weights are installed
        out = tmp_path / shlex.split(run)[shlex.split(run).index("-o") + 1]
        info = sf.info(str(out))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (48000, 2, 3 * 48000, "PCM_24")
    finally:
        subprocess.run(["unimoe-audio", "stop"], env=env, capture_output=True, timeout=60)


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = readme_command("test-command").partition(" && ")[2]
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().strip().splitlines()]
    assert test_cmd in ci
    # after it, only the dtype-sensitive tests again, with each dtype forced (issue 17)
    after = [ln for ln in ci[ci.index(test_cmd) + 1:] if "pytest" in ln]
    assert after and all(ln.startswith('UNIMOE_AUDIO_DTYPE=$dt python -m pytest -q "${DTYPE_TESTS[@]}"')
                         for ln in after), after
