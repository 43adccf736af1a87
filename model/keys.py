"""Tensor key names on disk and in memory: ``save_pretrained`` writes ``model.`` where the modules say
``language_model.`` (spec 2.3). The loader, the quantized writer, the memory estimate and the tiny
checkpoints all name tensors through these two functions."""
from __future__ import annotations

import re

_RULES = (
    (re.compile(r"^model\.language_model\."), "language_model."),
    (re.compile(r"^model\.visual\."), "visual."),
    (re.compile(r"^model\.(?!language_model\.|visual\.)"), "language_model."),
)


def normalize_key(name: str) -> str:
    """On-disk name -> in-memory name (``model.layers...`` -> ``language_model.layers...``)."""
    for pat, repl in _RULES:
        if pat.match(name):
            return pat.sub(repl, name, count=1)
    return name


def to_disk_key(name: str) -> str:
    """In-memory name -> the name ``save_pretrained`` writes."""
    return "model." + name[len("language_model."):] if name.startswith("language_model.") else name
