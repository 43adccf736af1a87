"""Saved voices: name + DAC codes + transcript under settings.voices_path, so speech requests name a
voice instead of re-sending and re-encoding the reference recording.

Layout: ``<voices>/<name>/voice.json`` (transcript, frames, source, created) and ``codes.npy`` ([T, 12]
int16/int32 DAC codes).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..client.protocol import ProtocolError, VoiceInfo

CODES_NAME = "codes.npy"
META_NAME = "voice.json"
DAC_FRAME_RATE = 50.0  # DAC 16 kHz: 320 samples per frame
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")


class VoiceStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def check_name(self, name: str, field: str = "name") -> None:
        """A voice name the store takes (ProtocolError naming ``field`` otherwise)."""
        if not _NAME.match(name or "") or ".." in name:
            raise ProtocolError("invalid_input", f"bad voice name {name!r}", field=field,
                                wanted="letters, digits, space, _ . - (up to 100)")

    def _dir(self, name: str, field: str = "name") -> Path:
        self.check_name(name, field)
        return self.root / name

    def exists(self, name: str) -> bool:
        d = self._dir(name)
        return (d / CODES_NAME).is_file() and (d / META_NAME).is_file()

    def save(self, name: str, codes: np.ndarray, transcript: str, source: str | None = None) -> VoiceInfo:
        d = self._dir(name)
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] == 0:
            raise ProtocolError("invalid_input", f"voice codes have shape {codes.shape}", field="audio_path",
                                wanted="a recording long enough to encode")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            np.save(tmp / CODES_NAME, codes.astype(np.int32))
            meta = {"name": name, "transcript": transcript, "frames": int(codes.shape[0]),
                    "seconds": codes.shape[0] / DAC_FRAME_RATE, "created": time.time(), "source": source}
            (tmp / META_NAME).write_text(json.dumps(meta, indent=2), "utf-8")
            if d.exists():
                old = self.root / f".{name}.old.{os.getpid()}"
                os.replace(d, old)
                os.replace(tmp, d)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, d)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return VoiceInfo.model_validate(meta)

    def load(self, name: str, field: str = "spec.voice") -> tuple[np.ndarray, str]:
        d = self._dir(name, field)
        if not (d / CODES_NAME).is_file():
            raise ProtocolError("not_found", f"no saved voice named {name!r}", field=field,
                                wanted="a name from 'voices ls'")
        meta = json.loads((d / META_NAME).read_text("utf-8"))
        return np.load(d / CODES_NAME), str(meta.get("transcript", ""))

    def remove(self, name: str) -> bool:
        d = self._dir(name)
        if not d.is_dir():
            return False
        shutil.rmtree(d)
        return True

    def list(self) -> list[VoiceInfo]:
        out = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not (d / META_NAME).is_file():
                continue
            with contextlib.suppress(ValueError, OSError):
                meta: dict[str, Any] = json.loads((d / META_NAME).read_text("utf-8"))
                meta.setdefault("name", d.name)
                out.append(VoiceInfo.model_validate(meta))
        return out
