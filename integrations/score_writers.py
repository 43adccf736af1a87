"""Writing a scored edit: the OTIO timeline with the score on new audio track(s), and the JSON report.
(The MLT file is :mod:`.mlt`.)"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .score_cues import Cue, Edit, require_otio
from .scored_edit import otio_timeline


def report(cues: list[Cue], skipped: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    events = [asdict(c) for c in cues]
    ok = bool(cues) and all(c.result.get("status") == "done" and c.result.get("exact") for c in cues)
    return {**meta, "ok": ok, "cues": events, "skipped": skipped, "written": time.time()}


def write_report(rep: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(rep, indent=2)
    if path is None:
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def write_otio(edit: Edit, cues: list[Cue], out: Path) -> Path:
    otio = require_otio()
    tl = otio_timeline(edit, cues)
    out = Path(out).resolve()  # the bundle adapters (.otiod, .otioz) want absolute paths
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".otiod":  # a folder: written in place (the adapter refuses an existing one)
        otio.adapters.write_to_file(tl, str(out))
        return out
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    otio.adapters.write_to_file(tl, str(tmp))
    tmp.replace(out)
    return out
