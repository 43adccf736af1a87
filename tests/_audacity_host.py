"""The real Audacity (Debian's package) under Xvfb with its scripting pipe, for tests.

The configuration dance (../shared/design/hosts.md): an isolated HOME whose audacity.cfg enables
mod-script-pipe. Written with the module's path and date, the prefs version and no splash screen, it is
accepted at the first launch (no second launch needed); a private TempDir keeps autosaves of killed
instances (and their recovery dialog) away from other runs. Start-up is bounded by progress: the process
must stay alive, the pipe must open, then a Message round trip must come back.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from unimoe_audio.integrations.audacity_unimoe import AudacityPipe, PipeError, pipe_paths

MODULE = Path("/usr/lib/audacity/modules/mod-script-pipe.so")


def audacity_version() -> tuple[int, int, int]:
    out = subprocess.run(["audacity", "--version"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "DISPLAY": ""}).stdout
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else (3, 2, 4)  # type: ignore[return-value]


def write_config(home: Path, temp: Path) -> Path:
    cfg = home / ".config" / "audacity" / "audacity.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(MODULE.stat().st_mtime))
    major, minor, micro = audacity_version()
    cfg.write_text(f"""PrefsVersion=1.1.1r1
[Version]
Major={major}
Minor={minor}
Micro={micro}
[GUI]
ShowSplashScreen=0
[Window]
X=0
Y=0
Width=1280
Height=960
Maximized=1
[Directories]
TempDir={temp}
[Module]
mod-script-pipe=1
[ModulePath]
mod-script-pipe={MODULE}
[ModuleDateTime]
mod-script-pipe={stamp}
""")
    return cfg


class AudacityHost:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.home = self.root / "home"
        self.temp = self.root / "tmp"
        self.xvfb: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None
        self.display = ""
        self.pipe: AudacityPipe | None = None

    def start(self, timeout: float = 240.0) -> "AudacityHost":
        # The pipe's name is per user, not per process: another Audacity of this user would answer instead.
        if self._pipe_owner() is not None:
            raise AssertionError(f"another Audacity (pid {self._pipe_owner()}) holds {pipe_paths()[0]}; close it first")
        self.temp.mkdir(parents=True, exist_ok=True)
        write_config(self.home, self.temp)
        r, w = os.pipe()
        self.xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x960x24", "-nolisten", "tcp"],
                                     pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as fh:
            self.display = ":" + fh.readline().strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "WAYLAND"))}
        env.update(HOME=str(self.home), DISPLAY=self.display, XDG_CONFIG_HOME=str(self.home / ".config"),
                   XDG_DATA_HOME=str(self.home / ".local" / "share"), NO_AT_BRIDGE="1")
        self.log = open(self.root / "audacity.log", "wb")
        self.proc = subprocess.Popen(["audacity"], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:  # the pipe opens once the modules load; a command answers once the window is idle
            self._alive()
            try:
                if self.pipe is None:
                    self.pipe = AudacityPipe(connect_timeout=5.0)
                self.pipe.sync(timeout=10.0)
                assert self._talks_to_us(), "the pipe that answered is not this Audacity's"
                return self
            except PipeError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"Audacity did not answer on its pipe in {timeout} s; windows: "
                                         f"{self.windows()}; log: {self.output()}") from None

    @staticmethod
    def _pipe_owner() -> int | None:
        """The pid of a process that has Audacity's end of the pipe open, if any."""
        target = pipe_paths()[0]
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or proc.name == str(os.getpid()):
                continue
            try:
                if any(os.readlink(fd).startswith(target) for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
            except OSError:
                continue
        return None

    def _talks_to_us(self) -> bool:
        """Our end of the pipe is the same fifo (inode) that this Audacity process holds open."""
        assert self.pipe is not None and self.proc is not None
        ours = os.fstat(self.pipe._to).st_ino
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                if os.stat(fd).st_ino == ours:
                    return True
            except OSError:
                continue
        return False

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"Audacity exited with {self.proc.returncode}: {self.output()}")

    def output(self) -> str:
        try:
            return (self.root / "audacity.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def windows(self) -> list[str]:
        out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "."], capture_output=True, text=True,
                             env={**os.environ, "DISPLAY": self.display}, timeout=30).stdout.split()
        names = []
        for wid in out:
            n = subprocess.run(["xdotool", "getwindowname", wid], capture_output=True, text=True,
                               env={**os.environ, "DISPLAY": self.display}, timeout=30).stdout.strip()
            names.append(n)
        return names

    def screenshot(self, path: Path, tries: int = 20) -> Path:
        """The screen once Audacity has repainted (it repaints when idle): shots until two agree."""
        last = b""
        for _ in range(tries):
            subprocess.run(["import", "-window", "root", "rgb:" + str(path) + ".rgb"], check=True, timeout=60,
                           env={**os.environ, "DISPLAY": self.display}, capture_output=True)
            now = Path(str(path) + ".rgb").read_bytes()
            if now == last:
                break
            last = now
            time.sleep(0.5)
        Path(str(path) + ".rgb").unlink()
        subprocess.run(["import", "-window", "root", str(path)], check=True, timeout=60,
                       env={**os.environ, "DISPLAY": self.display}, capture_output=True)
        return path

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
        for proc in (self.proc, self.xvfb):
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM) if proc is self.proc else proc.terminate()
                    proc.wait(20)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL) if proc is self.proc else proc.kill()
                    proc.wait(20)
        if getattr(self, "log", None):
            self.log.close()
