"""``python -m unimoe_audio.gui.app``: the UniMoE Audio panel."""
from __future__ import annotations

import argparse
import ctypes.util
import os
import sys
from typing import Callable

from unimoe_audio.client.settings import load_settings

XCB_CURSOR_HELP = (
    "unimoe-audio-panel: Qt's X11 platform (xcb) needs the library libxcb-cursor.so.0, which is not installed.\n"
    "  Debian/Ubuntu: sudo apt install libxcb-cursor0\n"
    "  Fedora: sudo dnf install xcb-util-cursor    Arch: sudo pacman -S xcb-util-cursor\n"
    "Or run on Wayland (QT_QPA_PLATFORM=wayland) or without a window (QT_QPA_PLATFORM=offscreen)."
)


def xcb_problem(env: dict[str, str] | None = None, platform: str | None = None,
                find_library: Callable[[str], str | None] = ctypes.util.find_library) -> str | None:
    """The message to print when Qt would pick X11 (xcb) and libxcb-cursor is missing; Qt itself would
    only abort with a line about a plugin that 'could not be loaded'. None when all is well."""
    env = dict(os.environ if env is None else env)
    platform = platform or sys.platform
    if not platform.startswith("linux"):
        return None
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen and not chosen.startswith("xcb"):
        return None
    if not chosen and (env.get("WAYLAND_DISPLAY") or not env.get("DISPLAY")):
        return None  # Qt picks Wayland, or there is no X server to talk to anyway
    return None if find_library("xcb-cursor") else XCB_CURSOR_HELP


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="unimoe-audio-panel", description="UniMoE Audio desktop panel")
    ap.add_argument("--no-start", action="store_true", help="do not start a daemon when none is running")
    ap.add_argument("--screenshot", metavar="PNG", help="save a screenshot after start-up and exit (for docs)")
    args, qt_args = ap.parse_known_args(argv)

    problem = xcb_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from .panel import Panel

    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setApplicationName("UniMoE Audio")
    app.setOrganizationName("unimoe-audio")
    panel = Panel(load_settings(), auto_start=not args.no_start)
    panel.resize(panel.sizeHint())
    panel.show()
    if args.screenshot:
        def shoot() -> None:
            panel.grab().save(args.screenshot)
            panel.close()
            app.quit()
        QTimer.singleShot(3000, shoot)
    app.aboutToQuit.connect(panel.shutdown)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
