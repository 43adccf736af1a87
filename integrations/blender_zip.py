"""Build the installable Blender add-on zip.

    python -m unimoe_audio.integrations.blender_zip build-zip unimoe_audio_vse.zip

The zip holds one folder, ``unimoe_audio_vse/``, whose ``__init__.py`` is
:mod:`unimoe_audio.integrations.blender_addon` (that module imports bpy, so it is copied as text here,
never imported). Blender: Edit > Preferences > Add-ons > Install from Disk, then enable "unimoe-audio".
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

ADDON_MODULE = "unimoe_audio_vse"
SOURCE = Path(__file__).with_name("blender_addon.py")


def build_zip(out: str | Path) -> Path:
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{ADDON_MODULE}/__init__.py", SOURCE.read_text("utf-8"))
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unimoe_audio.integrations.blender_zip",
                                 description="Build the Blender add-on zip (install it from Blender's preferences).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-zip", help="write the add-on zip")
    b.add_argument("out", nargs="?", default=f"{ADDON_MODULE}.zip", help="the zip to write (default: %(default)s)")
    args = ap.parse_args(argv)
    print(build_zip(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
