"""A random model bundle (LM checkpoint + DAC) in the published layout. It produces NOISE.

    python -m unimoe_audio.model.tiny_bundle DIR [--size tiny|small|full] [--seed N]   # prints the folder

``tiny`` runs anywhere in seconds; ``full`` is the published 7.16 B shape with a full-size random DAC
(about 14.6 GB on disk, written at low memory: model/tiny.py).

``ensure_tiny_model(dir)`` builds the folder once (idempotent): it builds everything in a temporary
sibling folder and renames it into place, so a crash never leaves a half-written model, and two
processes racing to build it both end up with a complete folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

MARKER = "README.txt"
BUNDLE_VERSION = 1
README = """\
unimoe-audio TINY RANDOM MODEL (bundle version {version})

This folder holds a tiny, randomly initialised UniMoE-Audio language model and a tiny random DAC
codec. It exists so the whole product runs without the real weights (first run, tests, CI).
It produces NOISE, not speech or music. Install the real weights with 'unimoe-audio models pull'.
"""


def _complete(d: Path, size: str | None = None, seed: int | None = None) -> bool:
    try:
        meta = json.loads((d / "tiny_bundle.json").read_text())
    except (OSError, ValueError):
        return False
    if (size is not None and meta.get("size", "tiny") != size) or (seed is not None and meta.get("seed", 0) != seed):
        return False
    return (meta.get("version") == BUNDLE_VERSION and (d / "config.json").is_file() and (d / "dac").is_dir()
            and (d / MARKER).is_file())


def _make_dac(dac_dir: Path, seed: int, size: str = "tiny") -> None:
    from . import codec

    dac_dir.mkdir(parents=True, exist_ok=True)
    codec.make_tiny_dac(dac_dir, seed=seed, kwargs=codec.FULL_KWARGS if size == "full" else codec.TINY_KWARGS)


def build_tiny_model(d: Path, *, size: str = "tiny", seed: int = 0, progress=None) -> None:
    """Write the bundle into an empty folder ``d`` (not atomic; see :func:`ensure_tiny_model`)."""
    from .tiny import make_tiny_checkpoint

    d.mkdir(parents=True, exist_ok=True)
    make_tiny_checkpoint(d, size=size, seed=seed, progress=progress)
    _make_dac(d / "dac", seed, size)
    cfg_path = d / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # the flag means "random weights": the daemon and clients say the output is noise (any size)
    cfg.setdefault("unimoe_audio_tiny", True)
    cfg.setdefault("unimoe_audio_note", f"random {size} model: produces noise")
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (d / MARKER).write_text(README.format(version=BUNDLE_VERSION))
    (d / "tiny_bundle.json").write_text(json.dumps({"version": BUNDLE_VERSION, "size": size, "seed": seed,
                                                    "tiny": True}, indent=2))


def ensure_tiny_model(dir: str | os.PathLike, *, size: str = "tiny", seed: int = 0, progress=None) -> Path:
    """The bundle of ``size`` at ``dir``, built on first use (a bundle of another size or seed there is
    replaced). Returns the folder path."""
    d = Path(dir).expanduser()
    if _complete(d, size, seed):
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.tmp-", dir=d.parent))
    try:
        build_tiny_model(tmp, size=size, seed=seed, progress=progress)
        if d.exists() and not _complete(d, size, seed):
            # A broken leftover (old version or interrupted by hand): move it out of the way.
            stale = d.with_name(f".{d.name}.stale-{os.getpid()}")
            os.replace(d, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, d)  # atomic on one filesystem; fails if another process won the race
        except OSError:
            if not _complete(d, size, seed):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def main(argv: list[str] | None = None) -> int:
    from .tiny import SIZES

    ap = argparse.ArgumentParser(prog="python -m unimoe_audio.model.tiny_bundle",
                                 description="Write a random-weight model folder (published layout).")
    ap.add_argument("dir")
    ap.add_argument("--size", choices=SIZES, default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)

    def progress(i: int, n: int, name: str) -> None:
        print(f"wrote {name} ({i}/{n})", file=sys.stderr, flush=True)

    print(ensure_tiny_model(a.dir, size=a.size, seed=a.seed, progress=progress))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
