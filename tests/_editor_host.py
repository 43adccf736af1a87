"""Shotcut and Kdenlive (Debian 22.12) under Xvfb: open a project, screenshot it, let the editor save it.

An X session of our own (Xvfb on a free display, openbox as window manager, a private HOME so no settings or
autosave of a user or another test leaks in); the editor is started on a file, we wait for its main window,
take a screenshot (ImageMagick's ``import``), and make it save the project (Shotcut: Ctrl+S writes the file it
opened; Kdenlive: Ctrl+Shift+S and a path typed into its Save As dialog), so a test reads back what the editor
itself holds. Every process started here is ended by its own pid (Shotcut ignores SIGTERM: SIGKILL).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

TOOLS = ("Xvfb", "openbox", "xdotool", "import")


def missing_tools(*extra: str) -> list[str]:
    return [t for t in (*TOOLS, *extra) if shutil.which(t) is None]


def wait_for(what: str, check, timeout: float = 240.0, every: float = 0.5):
    """Poll ``check`` until it returns something truthy; ``timeout`` is generous (a busy 2-core machine)."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


class XSession:
    def __init__(self, home: Path, size: str = "1600x1000x24"):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        r, w = os.pipe()
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", size, "-nolisten", "tcp"],
                                pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        self.procs.append(xvfb)
        with os.fdopen(r) as fh:
            num = fh.readline().strip()
        if not num:
            self.close()
            raise RuntimeError("Xvfb did not start")
        self.display = f":{num}"
        runtime = self.home / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        self.env = {**os.environ, "DISPLAY": self.display, "HOME": str(self.home), "XDG_RUNTIME_DIR": str(runtime),
                    "XDG_CONFIG_HOME": str(self.home / ".config"), "XDG_DATA_HOME": str(self.home / ".local/share"),
                    "XDG_CACHE_HOME": str(self.home / ".cache"), "QT_QPA_PLATFORM": "xcb", "SDL_AUDIODRIVER": "dummy",
                    "LC_ALL": "C.UTF-8"}
        self.env.pop("WAYLAND_DISPLAY", None)
        self.env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self.start(["openbox"], log="openbox.log")

    def start(self, argv: list[str], log: str) -> subprocess.Popen:
        fh = open(self.home / log, "wb")
        p = subprocess.Popen(argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        fh.close()
        self.procs.append(p)
        return p

    def xdotool(self, *args: str, check: bool = False) -> str:
        r = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=60)
        if check and r.returncode:
            raise RuntimeError(f"xdotool {' '.join(args)}: {r.stderr}")
        return r.stdout

    def windows(self, pattern: str) -> list[tuple[str, str]]:
        """(window id, title) of the mapped windows whose title matches the regular expression ``pattern``
        (matched here: xdotool's own regex misses titles with non-ASCII characters, as Kdenlive's "—")."""
        out = []
        for wid in self.xdotool("search", "--onlyvisible", "--name", ".").split():
            title = self.xdotool("getwindowname", wid).strip()
            if re.search(pattern, title):
                out.append((wid, title))
        return out

    def window(self, pattern: str, timeout: float = 240.0) -> str:
        return wait_for(f"a window named {pattern!r}", lambda: next((w for w, _ in self.windows(pattern)), None),
                        timeout)

    def keys(self, wid: str, *keys: str) -> None:
        self.xdotool("windowactivate", "--sync", wid)
        time.sleep(0.3)
        self.xdotool("key", "--clearmodifiers", *keys)

    def type(self, text: str) -> None:
        self.xdotool("type", "--delay", "15", text)

    def screenshot(self, out: Path) -> Path:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["import", "-window", "root", str(out)], env=self.env, check=True, timeout=60,
                       capture_output=True)
        return out

    def log(self, name: str) -> str:
        p = self.home / name
        return p.read_text(errors="replace") if p.exists() else ""

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL) if p is not self.procs[0] else p.kill()
                except (ProcessLookupError, PermissionError):
                    p.kill()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def __enter__(self) -> "XSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def file_settles(path: Path, after: float, quiet: float = 1.5) -> bool:
    """The file was written after ``after`` and has not changed for ``quiet`` seconds."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return st.st_mtime > after and time.time() - st.st_mtime > quiet and st.st_size > 0


def shotcut_open_and_save(x: XSession, project: Path, shot: Path) -> Path:
    """Open ``project`` in Shotcut, screenshot it, Ctrl+S (Shotcut rewrites the file it opened); the file."""
    x.start(["shotcut", "--noupgrade", str(project)], log="shotcut.log")
    wid = x.window(re.escape(f"{project.name} - Shotcut"))
    x.xdotool("windowsize", wid, "100%", "100%")
    time.sleep(3)  # the timeline fills in after the window shows; saving waits for the load to finish
    before = time.time()
    time.sleep(1.1)
    x.keys(wid, "ctrl+s")
    wait_for("Shotcut to save", lambda: file_settles(project, before), timeout=120)
    x.keys(wid, "0")  # Timeline > Zoom Timeline To Fit, for the screenshot
    time.sleep(2)
    x.screenshot(shot)
    return project


def kdenlive_open_and_save(x: XSession, project: Path, shot: Path, save_as: Path) -> Path:
    """Open ``project`` in Kdenlive (in its own D-Bus session), screenshot it, Save As ``save_as``."""
    x.start(["dbus-run-session", "--", "kdenlive", str(project)], log="kdenlive.log")
    wid = x.window(rf"^{re.escape(project.stem)} / .*Kdenlive$")
    time.sleep(4)  # clips' thumbnails and the timeline fill in after the window shows
    x.xdotool("windowsize", wid, "100%", "100%")
    time.sleep(1)
    x.keys(wid, *["ctrl+plus"] * 5)  # Timeline > Zoom In, for the screenshot (the edit is a few seconds long)
    time.sleep(2)
    x.screenshot(shot)
    x.keys(wid, "ctrl+shift+s")
    dialog = x.window(r"^Save As")
    x.xdotool("windowactivate", "--sync", dialog)
    x.xdotool("key", "--clearmodifiers", "ctrl+a")
    x.type(str(save_as))
    x.xdotool("key", "Return")
    wait_for("Kdenlive to save", lambda: file_settles(save_as, 0), timeout=120)
    return save_as
