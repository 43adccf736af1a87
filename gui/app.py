"""``python -m unimoe_audio.gui.app``: the UniMoE Audio panel."""
from __future__ import annotations

import argparse
import sys

from unimoe_audio.client.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="unimoe-audio-panel", description="UniMoE Audio desktop panel")
    ap.add_argument("--no-start", action="store_true", help="do not start a daemon when none is running")
    ap.add_argument("--screenshot", metavar="PNG", help="save a screenshot after start-up and exit (for docs)")
    args, qt_args = ap.parse_known_args(argv)

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
