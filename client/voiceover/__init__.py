"""Voicing a script to picture (``unimoe-audio voiceover``, the panel's Script tab, the Blender add-on):
subtitles or a timecoded script in, a spotted dialogue stem, one file per cue, a report and the spoken
subtitles out.

* ``script``  - reading SRT / WebVTT / ASS (pysubs2) and plain timecoded scripts into cues
* ``fit``     - the length asked of the model, the pitch-preserving stretch (ffmpeg), overflow rules
* ``wav``     - PCM WAV at the byte level: cue files and the stem, BWF chunks (standard library)
* ``report``  - the per-cue JSON report (also the run's state) and the spoken SRT/VTT
* ``session`` - ``Voiceover``: plan, submit, follow, fit, assemble; what every front end drives

No torch and no numpy here: it runs in Blender's and REAPER's Pythons.
"""
from .script import Cue, Script, ScriptError, read_script, split_speaker
from .session import Voiceover, VoiceoverError, VoiceoverOptions, output_paths, parse_only, parse_voice_map

__all__ = ["Cue", "Script", "ScriptError", "read_script", "split_speaker", "Voiceover", "VoiceoverError", "VoiceoverOptions",
           "output_paths", "parse_only", "parse_voice_map"]
