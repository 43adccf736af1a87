"""Audacity: music or speech for the selection, imported at the selection start on a new track.

Audacity's scripting module (mod-script-pipe) must be enabled: Edit > Preferences > Modules >
mod-script-pipe: Enabled, then restart Audacity. Select a time range in Audacity, then from a terminal::

    python -m unimoe_audio.integrations.audacity_unimoe music "warm pads, slow"
    python -m unimoe_audio.integrations.audacity_unimoe speech "Welcome back." --voice narrator
    python -m unimoe_audio.integrations.audacity_unimoe continue "same groove, brighter" --seconds 8

``continue`` (Continue selection) exports the selected audio, has the daemon continue that music (the
model hears it as the start of its own) and imports only the new part, on a new track, butted to the
selection's end: played together they are the selection followed by ``--seconds`` of new music.

It reads the selection over the pipe, asks the running daemon (``unimoe-audio serve``) for exactly the
selection's length at the project's default sample rate, waits with a progress line, imports the WAV
(named after the prompt: ``music-warm-pads-slow``) as a new track and aligns it to the selection start;
the selection is left as it was. Every change it makes is an undoable step. Audacity keeps running its own UI while this script waits: the script is a separate process.

The pipe protocol: a command line written to ``audacity_script_pipe.to.<uid>``; the answer is read from
``audacity_script_pipe.from.<uid>`` up to ``BatchCommand finished: OK`` (or ``Failed``) and an empty
line. Audacity 3.2's scripting cannot read the selection directly, so :func:`selection` adds a label
over it, reads the label back and undoes the label.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import select
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

DEFAULT_RATE = 48000


class PipeError(RuntimeError):
    """Audacity is not there, did not answer in time, or a command failed."""


def pipe_paths(uid: int | None = None) -> tuple[str, str]:
    """(to Audacity, from Audacity): ``/tmp/audacity_script_pipe.{to,from}.<uid>`` on Linux and macOS,
    ``\\\\.\\pipe\\ToSrvPipe`` / ``FromSrvPipe`` on Windows."""
    if sys.platform == "win32":  # pragma: no cover - Windows
        return r"\\.\pipe\ToSrvPipe", r"\\.\pipe\FromSrvPipe"
    uid = os.getuid() if uid is None else uid
    base = tempfile.gettempdir() if sys.platform == "darwin" else "/tmp"
    return f"{base}/audacity_script_pipe.to.{uid}", f"{base}/audacity_script_pipe.from.{uid}"


class AudacityPipe:
    """A connection to a running Audacity's mod-script-pipe.

    ``connect_timeout``: how long to wait for Audacity to open its end (a starting Audacity opens it after
    its modules load). ``command(text, timeout)`` returns the answer's text without the status line and
    raises :class:`PipeError` on ``Failed`` or when no answer comes in ``timeout`` seconds.
    """

    def __init__(self, paths: tuple[str, str] | None = None, connect_timeout: float = 10.0):
        self.to_path, self.from_path = paths or pipe_paths()
        deadline = time.monotonic() + connect_timeout
        self._to = -1
        while True:
            try:  # non-blocking: fails with ENXIO until Audacity reads its end (a stale fifo has no reader)
                self._to = os.open(self.to_path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENXIO) or time.monotonic() > deadline:
                    raise PipeError(f"Audacity's script pipe {self.to_path} is not open ({exc.strerror}): start "
                                    "Audacity with mod-script-pipe enabled (Preferences > Modules)") from None
                time.sleep(0.2)
        os.set_blocking(self._to, True)
        self._from = os.open(self.from_path, os.O_RDONLY | os.O_NONBLOCK)
        self._buf = b""

    def command(self, text: str, timeout: float = 30.0) -> str:
        os.write(self._to, (text.strip() + "\n").encode("utf-8"))
        lines = self._read_answer(time.monotonic() + timeout, text).rstrip("\n").split("\n")
        body = "\n".join(lines[:-1]).strip()
        if not lines[-1].endswith("OK"):
            raise PipeError(f"{text!r}: {lines[-1]} {body}".strip())
        return body

    def sync(self, timeout: float = 10.0) -> None:
        """Make sure the next answer read belongs to the next command: a ``Message`` with a fresh token,
        discarding any late answers to earlier commands that timed out, until the token comes back."""
        token = f"sync-{os.getpid()}-{time.monotonic_ns()}"
        os.write(self._to, f"Message: Text={token}\n".encode())
        deadline = time.monotonic() + timeout
        while True:
            got = self._read_answer(deadline, "Message")
            if token in got:
                return

    def _read_answer(self, deadline: float, what: str) -> str:
        """The next complete answer (body and status line), raw."""
        while True:
            end = self._buf.find(b"\n\n")
            while end >= 0:
                block = self._buf[:end + 1].decode("utf-8", "replace")
                if block.rstrip("\n").split("\n")[-1].startswith("BatchCommand finished:"):
                    self._buf = self._buf[end + 2:]
                    return block
                end = self._buf.find(b"\n\n", end + 1)
            left = deadline - time.monotonic()
            if left <= 0:
                raise PipeError(f"no answer from Audacity to {what!r} in time (starting, or a dialog open?)")
            ready, _, _ = select.select([self._from], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self._from, 65536)
                if chunk:
                    self._buf += chunk
                else:  # no writer at the moment (EOF); Audacity opens its end for the next answer
                    time.sleep(0.02)

    def json(self, text: str, timeout: float = 30.0) -> Any:
        return json.loads(self.command(text, timeout) or "null")

    def close(self) -> None:
        for fd in (self._to, self._from):
            if fd >= 0:
                os.close(fd)
        self._to = self._from = -1

    def __enter__(self) -> "AudacityPipe":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# what Audacity shows
# --------------------------------------------------------------------------------------------------
def selection(pipe: AudacityPipe) -> tuple[float, float]:
    """The selected time range (start, end) in seconds. Audacity 3.2's GetInfo has no selection type, so:
    add a label over the selection, read it back, undo that label, and select the range again (Undo also
    puts back the selection of the previous undo step)."""
    before = _labels(pipe)
    pipe.command("AddLabel:")
    try:
        after = _labels(pipe)
    finally:
        pipe.command("Undo:")
    new = [lab for lab in after if lab not in before]
    if not new:
        raise PipeError("could not read the selection (no label appeared)")
    start, end = float(new[0][0]), float(new[0][1])
    pipe.command(f"SelectTime: Start={start!r} End={end!r}")
    return start, end


def _labels(pipe: AudacityPipe) -> list[tuple[float, float, str]]:
    out = []
    for _track, labels in pipe.json("GetInfo: Type=Labels Format=JSON") or []:
        out.extend((float(a), float(b), str(t)) for a, b, t in labels)
    return out


def tracks(pipe: AudacityPipe) -> list[dict[str, Any]]:
    return list(pipe.json("GetInfo: Type=Tracks Format=JSON") or [])


def default_rate(pipe: AudacityPipe) -> int:
    try:
        v = pipe.command("GetPreference: Name=/SamplingRate/DefaultProjectSampleRate")
        return int(float(v)) if v else DEFAULT_RATE
    except (PipeError, ValueError):
        return DEFAULT_RATE


def _quote(value: str) -> str:
    return '"' + value.replace('"', "'") + '"'


def import_at(pipe: AudacityPipe, path: str, start: float, sel: tuple[float, float]) -> int:
    """Import ``path`` as a new track (named after the file) and move it to ``start`` seconds; the time
    selection is set back to ``sel``. Both steps are undoable edits (Import, then Tracks > Align Tracks >
    Start to Selection Start), so a later Undo never drops a half-done change. Returns the track's index."""
    n = len(tracks(pipe))
    pipe.command(f"Import2: Filename={_quote(path)}", timeout=120)
    if len(tracks(pipe)) <= n:
        raise PipeError(f"Audacity did not import {path}")
    index = n  # a mono or stereo file becomes one wave track, at the end
    pipe.command(f"SelectTracks: Track={index} TrackCount=1 Mode=Set")
    pipe.command(f"SelectTime: Start={start!r} End={start!r}")
    pipe.command("Align_StartToSelStart:")
    pipe.command(f"SelectTime: Start={sel[0]!r} End={sel[1]!r}")
    return index


def track_name(kind: str, prompt: str) -> str:
    """A file (and so track) name from the prompt: ``music-warm-pads-slow``."""
    words = re.findall(r"[\w]+", prompt.splitlines()[0] if prompt.strip() else "")
    return "-".join([kind, *words])[:60]


# --------------------------------------------------------------------------------------------------
# the request
# --------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    kind: str
    fields: dict[str, Any]
    start: float
    samples: int
    sample_rate: int
    track_name: str


def plan_request(kind: str, start: float, end: float, prompt: str, *, sample_rate: int = DEFAULT_RATE,
                 voice: str | None = None, folder: str | None = None, seed: int | None = None) -> Plan:
    """The job for the selection ``start..end``: exactly ``round(end*sr) - round(start*sr)`` samples."""
    kind = kind.strip().lower()
    if kind not in ("music", "speech"):
        raise ValueError(f"kind: wanted music or speech, got {kind!r}")
    if end <= start:
        raise ValueError("no selection: select the time range to fill in Audacity first")
    prompt = prompt.strip()
    if not prompt:
        raise ValueError("caption: empty" if kind == "music" else "text: empty")
    samples = int(round(end * sample_rate)) - int(round(start * sample_rate))
    fields: dict[str, Any] = {"seconds": samples / sample_rate, "sample_rate": sample_rate, "fit_length": True,
                              ("caption" if kind == "music" else "text"): prompt}
    if voice and kind == "speech":
        fields["voice"] = voice
    if folder:
        fields["folder"] = folder
    if seed is not None:
        fields["seed"] = seed
    name = track_name(kind, prompt)
    fields["name"] = name  # Audacity names the imported track after the file
    return Plan(kind, fields, float(start), samples, sample_rate, name)


def fill_selection(pipe: AudacityPipe, client: Any, kind: str, prompt: str, *, voice: str | None = None,
                   folder: str | None = None, seed: int | None = None, timeout: float | None = None,
                   on_progress: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Read the selection, generate, import at the selection start on a new track. Returns a report."""
    sel = selection(pipe)
    plan = plan_request(kind, sel[0], sel[1], prompt, sample_rate=default_rate(pipe), voice=voice,
                        folder=folder, seed=seed)
    job = client.submit(plan.kind, **plan.fields)
    result = job.wait(timeout=timeout, on_progress=on_progress)
    index = import_at(pipe, result.path, plan.start, sel)
    return {"selection": list(sel), "samples": plan.samples, "sample_rate": plan.sample_rate, "path": result.path,
            "track": index, "track_name": tracks(pipe)[index]["name"], "job_id": job.id}


def plan_continue(start: float, end: float, caption: str, seconds: float, *, sample_rate: int = DEFAULT_RATE,
                  clip: str, folder: str | None = None, seed: int | None = None) -> Plan:
    """The job continuing the selection ``start..end`` (exported to ``clip``) by ``seconds`` of new music
    that starts at the selection's end: the new part only (``new_only``), at the project rate."""
    if end - start < 1.0:
        raise ValueError("the selection is shorter than 1 s: select at least a second of music to continue")
    caption = caption.strip()
    if not caption:
        raise ValueError("caption: empty")
    if not seconds > 0:
        raise ValueError("seconds: wanted the length of new music, > 0")
    samples = int(round((end + seconds) * sample_rate)) - int(round(end * sample_rate))
    name = track_name("continue", caption)
    fields: dict[str, Any] = {"caption": caption, "continue_audio": clip, "seconds": samples / sample_rate,
                              "new_only": True, "sample_rate": sample_rate, "name": name}
    if folder:
        fields["folder"] = folder
    if seed is not None:
        fields["seed"] = seed
    return Plan("music", fields, float(end), samples, sample_rate, name)


def continue_selection(pipe: AudacityPipe, client: Any, caption: str, seconds: float, *, folder: str,
                       seed: int | None = None, timeout: float | None = None,
                       on_progress: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Continue the selected audio: export it (into ``folder``, which the daemon may read), generate the
    continuation, import the new part at the selection's end on a new track. Returns a report."""
    sel = selection(pipe)
    rate = default_rate(pipe)
    os.makedirs(folder, exist_ok=True)
    clip = os.path.join(folder, f".audacity-selection-{os.getpid()}-{time.monotonic_ns()}.wav")
    n_channels = max([int(t.get("channels", 1)) for t in tracks(pipe) if t.get("selected")] or [1])
    pipe.command(f"Export2: Filename={_quote(clip)} NumChannels={min(2, n_channels)}", timeout=120)
    pipe.command(f"SelectTime: Start={sel[0]!r} End={sel[1]!r}")  # Export2 leaves it, but be sure
    try:
        plan = plan_continue(sel[0], sel[1], caption, seconds, sample_rate=rate, clip=clip, folder=folder, seed=seed)
        job = client.submit(plan.kind, **plan.fields)
        result = job.wait(timeout=timeout, on_progress=on_progress)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(clip)
    index = import_at(pipe, result.path, plan.start, sel)
    return {"selection": list(sel), "samples": plan.samples, "sample_rate": plan.sample_rate, "path": result.path,
            "track": index, "track_name": tracks(pipe)[index]["name"], "job_id": job.id}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unimoe_audio.integrations.audacity_unimoe",
                                 description="Fill Audacity's selection with generated music or speech.")
    ap.add_argument("kind", choices=["music", "speech", "continue"],
                    help="continue: Continue selection (new music after the selected audio)")
    ap.add_argument("prompt", help="the caption (music, continue) or the text (speech)")
    ap.add_argument("--seconds", type=float, default=10.0, help="continue: seconds of new music (default 10)")
    ap.add_argument("--voice", help="a saved voice (speech; see 'unimoe-audio voices ls')")
    ap.add_argument("--folder", help="where the daemon writes the WAV (default: its output folder)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--timeout", type=float, default=None, help="give up on the job after this many seconds")
    ap.add_argument("--connect-timeout", type=float, default=10.0, help="wait this long for Audacity's pipe")
    args = ap.parse_args(argv)
    from unimoe_audio.client.client import Client, ClientError

    def progress(u: Any) -> None:
        print(f"\r{u.stage or u.kind} {int(u.fraction * 100):3d} %", end="", file=sys.stderr, flush=True)

    try:
        with AudacityPipe(connect_timeout=args.connect_timeout) as pipe, Client() as client:
            if args.kind == "continue":
                folder = args.folder or str(client.settings.output_path)
                report = continue_selection(pipe, client, args.prompt, args.seconds, folder=folder, seed=args.seed,
                                            timeout=args.timeout, on_progress=progress)
            else:
                report = fill_selection(pipe, client, args.kind, args.prompt, voice=args.voice, folder=args.folder,
                                        seed=args.seed, timeout=args.timeout, on_progress=progress)
    except (PipeError, ClientError, ValueError, TimeoutError) as exc:
        print(f"\nunimoe-audio: {exc}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
