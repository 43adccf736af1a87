"""What the Blender add-on's *Voice Script* needs that is not bpy: the cues of selected text strips, the
frame a spoken cue goes to, and the output path. The run itself is the client's
:class:`~unimoe_audio.client.voiceover.Voiceover` (the same one the CLI and the panel drive), polled
from the add-on's timer; this module only adapts the sequencer to it.
"""
from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Iterable

from unimoe_audio.client.voiceover import Cue, Script, ScriptError, split_speaker

from .blender_vse_score import scene_rate

__all__ = ["script_from_strips", "cue_frame", "output_for", "scene_rate"]


def script_from_strips(strips: Iterable[tuple[str, str, int, int]], rate: Fraction,
                       source: str = "text strips") -> Script:
    """A script of text strips ``(name, text, frame_final_start, frame_final_end)``: one cue each, in time
    order, its slot exactly the strip's frames. ``NAME: text`` names a speaker, as in a subtitle file."""
    rows = sorted(strips, key=lambda s: (s[2], s[0]))
    script = Script(path=Path(source), format="blender", cues=[])
    for i, (name, text, first, end) in enumerate(rows, 1):
        speaker, body = split_speaker(" ".join((text or "").split()))
        if not re.search(r"\w", body):
            script.skipped.append({"index": i, "reason": f"text strip {name!r} has no text"})
            continue
        script.cues.append(Cue(index=i, start=Fraction(int(first)) / rate, end=Fraction(int(end)) / rate, text=body,
                               speaker=speaker))
    if not script.cues:
        raise ScriptError("no selected text strip has text to speak")
    for a, b in zip(script.cues, script.cues[1:]):
        if a.end is not None and b.start < a.end:
            script.warnings.append(f"cue {a.index} overlaps cue {b.index}: cue {a.index} is fitted to end when "
                                   f"cue {b.index} starts")
    return script


def cue_frame(seconds: float, rate: Fraction, offset: int = 0) -> int:
    """The scene frame where audio placed at ``seconds`` (from the script's zero) starts."""
    return offset + round(Fraction(seconds) * rate)


def output_for(blend_folder: str | None, scene: str, source: str, fallback: str) -> str:
    """The stem's path: ``<the .blend's folder>/unimoe/<scene>-<source>-voiceover.wav`` (``source``: the
    subtitle file's name, or ``strips``), or in ``fallback`` (the client's output folder) for an unsaved
    file. One name per source, so voicing a file never overwrites the cues of the text strips."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{scene}-{source}").strip("._") or "scene"
    return os.path.join(blend_folder or fallback, f"{safe}-voiceover.wav")
