"""Paths and output files: allowed roots, unique names, atomic WAV + sidecar writes.

Every path a request names is checked against ``settings.allowed_root_paths()`` (after resolving
symlinks and ``..``). A finished job's WAV is rendered to a hidden temporary file in the target folder; its unique
name is reserved by creating the sidecar (``os.link``: fails instead of overwriting); then the WAV is
renamed into place, so a visible ``.wav`` is always complete; finally the full sidecar replaces the
placeholder. A rerun after a crash reuses the name its own placeholder reserved.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..client import bwf, tasks
from ..client.models_store import human_bytes
from ..client.protocol import PROTOCOL_VERSION, OutputOptions, ProtocolError, SpotInfo

TMP_PREFIX = ".unimoe-"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def check_allowed(path: str | os.PathLike[str], roots: list[Path], field: str) -> Path:
    """The resolved path, or ProtocolError(path_not_allowed) naming ``field``."""
    raw = str(path)
    if "\x00" in raw or not raw.strip():
        raise ProtocolError("invalid_input", "empty or malformed path", field=field, wanted="a file path")
    p = Path(raw).expanduser()
    if not p.is_absolute():
        raise ProtocolError("invalid_input", f"{raw!r} is not an absolute path", field=field, wanted="an absolute path")
    resolved = p.resolve(strict=False)
    if not any(_inside(resolved, r) for r in roots):
        raise ProtocolError("path_not_allowed", f"{raw} is outside the allowed roots", field=field,
                            wanted="a path inside: " + ", ".join(str(r) for r in roots))
    return resolved


def check_input_file(path: str, roots: list[Path], field: str) -> Path:
    p = check_allowed(path, roots, field)
    if not p.is_file():
        raise ProtocolError("not_found", f"no such file: {path}", field=field, wanted="an existing file")
    return p


def check_input_files(spec: Any, roots: list[Path]) -> None:
    """Every input file the task's spec names (client/tasks/: ``input_files``) is inside the roots and exists."""
    for name in tasks.get(spec.task).input_files:
        value = getattr(spec, name, None)
        if value:
            check_input_file(value, roots, f"spec.{name}")


def output_folder(folder: str | None, default: Path, roots: list[Path], field: str = "output.folder") -> Path:
    if folder is None:
        return Path(default)
    p = check_allowed(folder, roots, field)
    if p.exists() and not p.is_dir():
        raise ProtocolError("invalid_input", f"{folder} is not a folder", field=field, wanted="a folder")
    return p


_SAFE = re.compile(r"[^A-Za-z0-9 _.+-]+")


def safe_stem(name: str) -> str:
    stem = name[:-4] if name.lower().endswith(".wav") else name
    stem = _SAFE.sub("_", stem).strip(" .") or "audio"
    return stem[:120]


def remove_job_temps(folder: Path, job_id: str) -> None:
    """Remove temporary files a killed earlier attempt of this job left behind."""
    with contextlib.suppress(OSError):
        for p in Path(folder).glob(f".*{job_id}*"):  # ours and write_wav's own temp names
            with contextlib.suppress(OSError):
                p.unlink()


# Our temp names: ".unimoe-<job>.tmp.wav", write_wav's ".<that stem>.<random>.tmp.wav", sidecar
# placeholders ".unimoe-<job>.<random>.json.tmp" and sidecar rewrites ".unimoe-<random>.json.tmp".
_TEMP = re.compile(r"^\.{1,2}unimoe-(?:([0-9a-f]{32})(?=\.))?.*\.(?:tmp\.wav|json\.tmp)$")
FOREIGN_TEMP_AGE_S = 3600.0


def clean_stale_temps(folder: Path, job_state: Any, *, foreign_age_s: float = FOREIGN_TEMP_AGE_S) -> list[Path]:
    """At daemon start (before any job runs): remove the hidden temp files a killed daemon left in
    ``folder``. A temp naming a job this daemon knows (``job_state(id)`` not None) is stale now; one naming
    no job of ours may belong to another daemon writing to the same folder, so it goes only when older
    than ``foreign_age_s``. Returns the paths removed."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP.match(e.name)
        if not m or not e.is_file(follow_symlinks=False):
            continue
        ours = m.group(1) is not None and job_state(m.group(1)) is not None
        try:
            if not ours and now - e.stat(follow_symlinks=False).st_mtime < foreign_age_s:
                continue
            os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            continue
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_json_temp(folder: Path, data: dict[str, Any]) -> str:
    """``data`` as JSON in a hidden temp file in ``folder``, flushed to disk; returns its path."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".json.tmp", dir=folder)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


# ---------------------------------------------------------------------------------------------------
# Disk space: a full disk is ``disk_full`` naming the folder and the space needed
# ---------------------------------------------------------------------------------------------------
SIDECAR_RESERVE = 256 * 1024  # the sidecar JSON, RIFF/BWF chunks and filesystem slack


def wav_bytes(samples: int, channels: int, bit_depth: int) -> int:
    return int(samples) * int(channels) * (int(bit_depth) // 8) + 44


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(folder: Path, needed: int) -> ProtocolError:
    free = free_bytes(folder)
    have = f"; {human_bytes(free)} free" if free is not None else ""
    return ProtocolError("disk_full", f"not enough space in {folder} for the take: it needs {human_bytes(needed)}{have}",
                         field="output.folder",
                         wanted=f"at least {human_bytes(needed)} free in {folder}, or another output folder")


def check_space(folder: Path, needed: int) -> None:
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise disk_full(folder, needed)


def is_disk_full(exc: BaseException, folder: Path, needed: int) -> bool:
    """ENOSPC/EDQUOT, or any write error (libsndfile reports a short write as an assertion) while the
    folder has less than ``needed`` bytes free."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    if isinstance(exc, (ProtocolError, KeyboardInterrupt, SystemExit)):
        return False
    free = free_bytes(folder)
    return free is not None and free < needed


def _unreserve(final: Path, job_id: str, *, wav_too: bool) -> None:
    """Undo a failed write: remove the name's placeholder sidecar (only while it is still this job's
    placeholder) and, when it was already renamed into place, the WAV."""
    side = final.with_suffix(".json")
    data = _sidecar(side)
    if data.get("job_id") == job_id and data.get("state") == "writing":
        with contextlib.suppress(OSError):
            if wav_too:
                final.unlink()
            side.unlink()


def clean_partial_outputs(folder: Path, job_state: Any) -> list[Path]:
    """At daemon start: remove the visible leftovers of writes that never finished (a placeholder sidecar
    ``{"state": "writing"}`` and the WAV beside it) of jobs that will not run again (failed, cancelled,
    or unknown to this queue and older than an hour). A queued job's placeholder stays: its rerun reuses
    the name. Returns the paths removed."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".json") and e.is_file(follow_symlinks=False)]
    except OSError:
        return removed
    for e in entries:
        try:
            if e.stat().st_size > 4096:
                continue  # a finished sidecar; placeholders are a few dozen bytes
            data = json.loads(Path(e.path).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("state") != "writing" or not isinstance(data.get("job_id"), str):
            continue
        state = job_state(data["job_id"])
        if state in ("queued", "running", "done"):
            continue
        if state is None and now - e.stat().st_mtime < FOREIGN_TEMP_AGE_S:
            continue  # maybe another daemon's write in progress
        side = Path(e.path)
        for p in (side.with_suffix(".wav"), side):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sidecar_job(path: Path) -> str | None:
    return _sidecar(path).get("job_id")


def reserve_name(folder: Path, stem: str, job_id: str, suffix: str = ".wav", *, overwrite: bool = False) -> Path:
    """Pick the job's final path and reserve it by creating its sidecar (``os.link`` of a placeholder:
    atomic, never overwrites). The name asked for is ``stem.wav``; when it is taken, ``overwrite``
    (``output.overwrite``) takes it over unless another job is still writing it (its old file is replaced
    only when the new one is complete), else the next free ``stem-2.wav``, ``stem-3.wav``... is used.
    A name whose sidecar already names ``job_id`` is this job's own, from an attempt killed while
    writing: it is reused, so a rerun never leaves a duplicate or an orphan."""
    fd, ph = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{job_id}.", suffix=".json.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"job_id": job_id, "state": "writing"}, fh)
        os.chmod(ph, 0o666 & ~_umask())
        n = 1
        while n < 100_000:
            name = stem if n == 1 else f"{stem}-{n}"
            final, side = folder / f"{name}{suffix}", folder / f"{name}.json"
            if side.exists():
                if _sidecar_job(side) == job_id:
                    return final
                if overwrite and n == 1 and _sidecar(side).get("state") != "writing":
                    os.replace(ph, side)  # the name is this job's now; its audio replaces the old file
                    return final
            elif not final.exists() or (overwrite and n == 1):
                try:
                    os.link(ph, side)
                    return final
                except FileExistsError:
                    pass
                except OSError:  # no hard links on this filesystem: exclusive create instead
                    try:
                        with open(side, "x", encoding="utf-8") as fh:
                            json.dump({"job_id": job_id, "state": "writing"}, fh)
                        return final
                    except FileExistsError:
                        pass
            n += 1
        raise ProtocolError("internal", f"no free file name for {stem} in {folder}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(ph)


# ---------------------------------------------------------------------------------------------------
# Rendering (rate, channels, loudness, length) through model/audio_out.py
# ---------------------------------------------------------------------------------------------------
def render(audio: np.ndarray, sample_rate: int, *, out_rate: int, channels: int, normalize: bool,
           loudness_lufs: float | None, true_peak_db: float, target_samples: int | None) -> tuple[np.ndarray, dict]:
    """float32 [channels, n] at ``out_rate``; returns (audio, info about what was done)."""
    from ..model import audio_out

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    info: dict[str, Any] = {}
    x = audio_out.to_rate(x, sample_rate, out_rate)
    x = audio_out.to_channels(x, channels)
    if target_samples is not None:
        x = audio_out.fit_length(x, target_samples, out_rate)
    if normalize and loudness_lufs is not None:
        x, norm = audio_out.normalize_loudness(x, out_rate, loudness_lufs, true_peak_db)
        info["loudness"] = norm
    return np.ascontiguousarray(x, dtype=np.float32), info


def render_splice(audio: np.ndarray, plan: dict[str, Any], *, out_rate: int, channels: int, normalize: bool,
                  loudness_lufs: float | None, true_peak_db: float, new_only: bool) -> tuple[np.ndarray, dict]:
    """A continued clip or a loop (model/splice.py). Loops made from nothing are normalized like any
    music (one gain for the whole loop keeps the wrap seamless); anything holding the editor's clip is not."""
    from ..model import audio_out
    from ..model import splice as splice_mod

    x, sinfo = splice_mod.render(audio, plan, out_rate=out_rate, channels=channels, new_only=new_only)
    info: dict[str, Any] = {"splice": sinfo}
    if normalize and loudness_lufs is not None and plan.get("clip") is None:
        x, info["loudness"] = audio_out.normalize_loudness(x, out_rate, loudness_lufs, true_peak_db)
    return np.ascontiguousarray(x, dtype=np.float32), info


def write_output(
    audio: np.ndarray,
    sample_rate: int,
    *,
    job_id: str,
    task: str,
    folder: Path,
    name: str | None,
    opts: OutputOptions,
    defaults: Any,
    target_seconds: float | None,
    sidecar: dict[str, Any],
    spot: SpotInfo | None = None,
    description: str = "",
    version: str = "",
    splice: dict[str, Any] | None = None,
    new_only: bool = False,
) -> dict[str, Any]:
    """Render and write the job's WAV and sidecar; returns the result fields. With ``spot``, the WAV
    carries a BWF ``bext`` time reference and an iXML chunk (see :func:`spot_chunks`). With ``splice``
    (a continued clip or a loop, model/continuation.py) the audio is built by model/splice.py at the
    output's rate; a continuation gets no loudness normalization (the original keeps its level)."""
    from ..model import audio_out
    from ..model.length import samples_at

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_job_temps(folder, job_id)
    out_rate = opts.sample_rate or defaults.sample_rate
    channels = opts.channels or defaults.channels
    bit_depth = opts.bit_depth or defaults.bit_depth
    lufs = opts.loudness_lufs if opts.loudness_lufs is not None else defaults.loudness_lufs
    tp = opts.true_peak_db if opts.true_peak_db is not None else defaults.true_peak_db
    target = None
    if opts.fit_length and target_seconds is not None:
        target = samples_at(target_seconds, out_rate)  # model/length.py: the one rounding rule
    if splice is not None:
        x, info = render_splice(audio, splice, out_rate=out_rate, channels=channels, normalize=opts.normalize,
                                loudness_lufs=lufs, true_peak_db=tp, new_only=new_only)
        target = None
    else:
        x, info = render(audio, sample_rate, out_rate=out_rate, channels=channels, normalize=opts.normalize,
                         loudness_lufs=lufs, true_peak_db=tp, target_samples=target)
    stem = safe_stem(name) if name else f"{task}-{job_id[:8]}"
    tmp = folder / f"{TMP_PREFIX}{job_id}.tmp.wav"
    needed = wav_bytes(x.shape[-1], channels, bit_depth) + SIDECAR_RESERVE
    check_space(folder, needed)
    seconds = x.shape[-1] / out_rate
    final: Path | None = None
    placed = False
    try:
        chunks = spot_chunks(spot, job_id=job_id, sample_rate=out_rate, bit_depth=bit_depth, channels=channels,
                             description=description, loudness=info.get("loudness"), version=version) if spot else []
        audio_out.write_wav(tmp, x, out_rate, bit_depth=bit_depth, chunks=chunks)
        final = reserve_name(folder, stem, job_id, overwrite=opts.overwrite)
        result = {"path": str(final), "sidecar": str(final.with_suffix(".json")), "seconds": seconds,
                  "sample_rate": out_rate, "channels": channels, "bit_depth": bit_depth,
                  "loudness_lufs": _output_lufs(info)}
        side = dict(sidecar)
        normalized = opts.normalize and not (splice and splice.get("clip"))  # the editor's audio keeps its level
        side["output"] = {**result, "normalize": normalized, "loudness_lufs": lufs if normalized else None,
                          "true_peak_db": tp, "samples": int(x.shape[-1]), "fit_length": target is not None,
                          **({"loudness": info["loudness"]} if "loudness" in info else {}),
                          **({"splice": info["splice"]} if "splice" in info else {})}
        if spot is not None:
            side["output"]["time_reference"] = time_reference(spot, out_rate)
        side.setdefault("protocol_version", PROTOCOL_VERSION)
        side.setdefault("written", time.time())
        # Both files are complete on disk before either becomes visible: the two renames need no space,
        # so a full disk can never leave a WAV beside a placeholder sidecar.
        side_tmp = _write_json_temp(folder, side)
        try:
            os.replace(tmp, final)  # atomic: the .wav appears complete or not at all
            placed = True
            os.replace(side_tmp, final.with_suffix(".json"))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(side_tmp)
    except BaseException as exc:
        if final is not None:
            _unreserve(final, job_id, wav_too=placed)
        if is_disk_full(exc, folder, needed):
            raise disk_full(folder, needed) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return result


def _output_lufs(info: dict[str, Any]) -> float | None:
    """The written file's integrated loudness (LUFS): measured input + the gain applied; None when not
    normalized or silent."""
    norm = info.get("loudness") or {}
    if norm.get("input_lufs") is None:
        return None
    return round(float(norm["input_lufs"]) + float(norm["gain_db"]), 2)


def time_reference(spot: SpotInfo, sample_rate: int) -> int | None:
    """The first sample's position in samples since midnight at ``sample_rate`` (None without a position).
    Rounded like the timeline maths (``round(seconds * rate)``): 01:00:00:00 at 24000/1001 is 3603.6 s."""
    start = spot.start_seconds()
    return None if start is None else round(start * sample_rate)


def spot_chunks(spot: SpotInfo, *, job_id: str, sample_rate: int, bit_depth: int, channels: int,
                description: str = "", loudness: dict[str, Any] | None = None,
                version: str = "") -> list[tuple[bytes, bytes]]:
    """``bext`` (v2, with the loudness measured while normalizing) and ``iXML`` chunks for a spotted file."""
    from datetime import datetime

    from ..client.timecode import is_drop_timecode, parse_rate

    ref = time_reference(spot, sample_rate)
    date, clock = bwf.origination(datetime.now())
    lufs = tp = None
    if loudness and loudness.get("input_lufs") is not None:
        lufs = float(loudness["input_lufs"]) + float(loudness.get("gain_db", 0.0))
        tp = loudness.get("true_peak_db")
    bits = {16: "16", 24: "24", 32: "32"}.get(bit_depth, str(bit_depth))
    history = (f"A=PCM,F={sample_rate},W={bits},M={'stereo' if channels == 2 else 'mono'},"
               f"T=unimoe-audio{(' ' + version) if version else ''}")
    bext = bwf.Bext(description=(spot.note or description)[:256], originator="unimoe-audio",
                    originator_reference=job_id[:32], origination_date=date, origination_time=clock,
                    time_reference=ref or 0, loudness_value=lufs, max_true_peak_level=tp, coding_history=history)
    rate = drop = None
    if spot.record_in is not None and spot.fps is not None:
        rate = parse_rate(spot.fps)
        drop = spot.drop if spot.drop is not None else is_drop_timecode(spot.record_in)
    ixml = bwf.ixml_chunk(project=spot.project, scene=spot.scene, take=spot.take, note=spot.note, file_uid=job_id,
                          time_reference=ref, sample_rate=sample_rate, bit_depth=bit_depth, channels=channels,
                          timecode_rate=rate, drop=bool(drop))
    return [(b"bext", bwf.bext_chunk(bext)), (b"iXML", ixml)]


def write_partial(audio: np.ndarray, sample_rate: int, folder: Path, job_id: str, index: int) -> Path:
    """A snapshot of the audio so far (stream_partial), at the model rate, 16-bit, atomically."""
    from ..model import audio_out

    folder = Path(folder) / job_id
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"partial-{index:04d}.wav"
    tmp = folder / f".partial-{index:04d}.tmp.wav"
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    audio_out.write_wav(tmp, x, sample_rate, bit_depth=16)
    os.replace(tmp, final)
    return final
