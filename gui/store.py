"""What the panel remembers between sessions: prompt history, named presets and "keep" marks.

One small JSON file in the settings' config folder (platformdirs, or UNIMOE_AUDIO_HOME / CONFIG_DIR),
written atomically; a damaged file is set aside and the panel starts fresh rather than failing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

HISTORY_LIMIT = 50


class PanelState(BaseModel):
    history: dict[str, list[str]] = Field(default_factory=dict, description="task -> prompts, newest first")
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name -> {kind, fields}")
    kept: list[str] = Field(default_factory=list, description="job ids marked keep")


class PanelStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.state = self._read()

    @classmethod
    def for_settings(cls, settings: Any) -> "PanelStore":
        return cls(Path(settings.config_path) / "panel.json")

    def _read(self) -> PanelState:
        try:
            return PanelState.model_validate_json(self.path.read_text())
        except FileNotFoundError:
            return PanelState()
        except (OSError, ValueError, ValidationError):
            try:  # keep the damaged file for a look, start fresh
                self.path.replace(self.path.with_suffix(".damaged.json"))
            except OSError:
                pass
            return PanelState()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state.model_dump(), indent=1))
        tmp.replace(self.path)

    # -- history ---------------------------------------------------------------------------------------
    def remember(self, kind: str, prompt: str) -> None:
        prompt = prompt.strip()
        if not prompt:
            return
        items = [p for p in self.state.history.get(kind, []) if p != prompt]
        self.state.history[kind] = [prompt, *items][:HISTORY_LIMIT]
        self.save()

    def history(self, kind: str) -> list[str]:
        return list(self.state.history.get(kind, []))

    # -- presets ----------------------------------------------------------------------------------------
    def save_preset(self, name: str, kind: str, fields: dict[str, Any]) -> None:
        self.state.presets[name] = {"kind": kind, "fields": dict(fields)}
        self.save()

    def presets(self, kind: str | None = None) -> dict[str, dict[str, Any]]:
        return {n: p for n, p in self.state.presets.items() if kind is None or p.get("kind") == kind}

    def delete_preset(self, name: str) -> None:
        if self.state.presets.pop(name, None) is not None:
            self.save()

    # -- keep marks -------------------------------------------------------------------------------------
    def set_kept(self, job_id: str, kept: bool) -> None:
        ids = [j for j in self.state.kept if j != job_id]
        if kept:
            ids.append(job_id)
        self.state.kept = ids[-2000:]
        self.save()

    def is_kept(self, job_id: str) -> bool:
        return job_id in self.state.kept
