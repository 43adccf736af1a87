"""Build the installable Blender add-on zip.

    python -m unimoe_audio.integrations.blender_zip build-zip [--with-client] unimoe_audio_vse.zip

The zip holds one folder, ``unimoe_audio_vse/``, whose ``__init__.py`` is
:mod:`unimoe_audio.integrations.blender_addon` (that module imports bpy, so it is copied as text here,
never imported). Blender: Edit > Preferences > Add-ons > Install from Disk, then enable "unimoe-audio".

``--with-client`` also bundles the pure-Python client side (``unimoe_audio.client`` and
``unimoe_audio.integrations``) under ``unimoe_audio_vse/vendor/``, which the add-on puts first on
``sys.path``: Blender's Python then needs only the light packages the client imports (pyzmq, pydantic,
pydantic-settings, platformdirs), installed with Blender's own pip. No package that declares the engine's
dependencies (torch) is installed there, so pip has nothing to complain about.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

ADDON_MODULE = "unimoe_audio_vse"
SOURCE = Path(__file__).with_name("blender_addon.py")


#: The client side's packages (pure Python, no torch): what the add-on imports, and what they import.
CLIENT_PACKAGES = ("client", "integrations")
VENDOR = "vendor"


def _client_files() -> list[tuple[Path, str]]:
    """(file, its name under vendor/) for every module of the client side's packages."""
    import unimoe_audio.client as client_pkg

    roots = {"client": Path(client_pkg.__file__).parent, "integrations": Path(__file__).parent}
    files = []
    for name in CLIENT_PACKAGES:
        for f in sorted(roots[name].rglob("*.py")):
            if "__pycache__" not in f.parts:
                files.append((f, f"unimoe_audio/{name}/{f.relative_to(roots[name]).as_posix()}"))
    return files


def build_zip(out: str | Path, *, with_client: bool = False) -> Path:
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{ADDON_MODULE}/__init__.py", SOURCE.read_text("utf-8"))
        if with_client:
            for f, name in _client_files():
                z.writestr(f"{ADDON_MODULE}/{VENDOR}/{name}", f.read_bytes())
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unimoe_audio.integrations.blender_zip",
                                 description="Build the Blender add-on zip (install it from Blender's preferences).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-zip", help="write the add-on zip")
    b.add_argument("out", nargs="?", default=f"{ADDON_MODULE}.zip", help="the zip to write (default: %(default)s)")
    b.add_argument("--with-client", action="store_true",
                   help="bundle the client side (pure Python): Blender then needs only pyzmq, pydantic, "
                   "pydantic-settings and platformdirs")
    args = ap.parse_args(argv)
    print(build_zip(args.out, with_client=args.with_client))
    return 0


if __name__ == "__main__":
    sys.exit(main())
