"""PCM WAV files at the byte level: read a file's format and samples, write one atomically with extra RIFF
chunks (BWF ``bext``, ``iXML``) before its data, and lay cues into a stem at sample offsets.

Standard library only, on purpose: the stem is assembled where the editor is (the CLI, the panel,
Blender's Python, which has no soundfile), and since cues never overlap in a stem, placing a cue is a
byte copy at ``start_sample * block_align``: bit-exact, no float round trip, no mixing.
"""
from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

__all__ = ["WavInfo", "WavError", "read_info", "read_pcm", "write_pcm", "write_stem", "MAX_DATA_BYTES"]

MAX_DATA_BYTES = 0xFFFFFFFF - 4096  # plain RIFF: 4 GiB minus the headers
_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    pass


@dataclass(frozen=True)
class WavInfo:
    rate: int
    channels: int
    bits: int
    format_tag: int  # 1 integer PCM, 3 float
    frames: int
    data_offset: int
    block_align: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def same_format(self, other: "WavInfo") -> bool:
        return (self.rate, self.channels, self.bits, self.format_tag) == (
            other.rate, other.channels, other.bits, other.format_tag)


def _chunks(fh: BinaryIO) -> Iterable[tuple[bytes, int, int]]:
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("not a RIFF WAV file")
    while True:
        ch = fh.read(8)
        if len(ch) < 8:
            return
        cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
        pos = fh.tell()
        yield cid, pos, size
        fh.seek(pos + size + (size & 1))


def read_info(path: str | Path) -> WavInfo:
    fmt: tuple[int, int, int, int, int] | None = None
    try:
        with open(path, "rb") as fh:
            for cid, pos, size in _chunks(fh):
                if cid == b"fmt ":
                    fh.seek(pos)
                    body = fh.read(size)
                    tag, ch, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
                    if tag == _EXTENSIBLE and len(body) >= 26:
                        tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID's first field
                    fmt = (tag, ch, rate, align, bits)
                elif cid == b"data":
                    if fmt is None:
                        raise WavError("data before fmt")
                    tag, ch, rate, align, bits = fmt
                    if tag not in (1, 3) or align <= 0:
                        raise WavError(f"format {tag} is not PCM or float")
                    end = os.fstat(fh.fileno()).st_size
                    return WavInfo(rate, ch, bits, tag, min(size, end - pos) // align, pos, align)
    except OSError as exc:
        raise WavError(f"{path}: {exc.strerror or exc}") from None
    except WavError as exc:
        raise WavError(f"{path}: {exc}") from None
    raise WavError(f"{path}: no data chunk")


def read_pcm(path: str | Path, info: WavInfo | None = None) -> bytes:
    info = info or read_info(path)
    with open(path, "rb") as fh:
        fh.seek(info.data_offset)
        return fh.read(info.frames * info.block_align)


def _header(info: WavInfo, data_bytes: int, chunks: Sequence[tuple[bytes, bytes]]) -> bytes:
    # plain WAVE_FORMAT_PCM / IEEE_FLOAT, as libsndfile writes mono and stereo WAV
    fmt = struct.pack("<HHIIHH", info.format_tag, info.channels, info.rate, info.rate * info.block_align,
                      info.block_align, info.bits)
    body = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    for cid, chunk in chunks:
        if len(cid) != 4:
            raise WavError(f"chunk id {cid!r} is not 4 bytes")
        body += cid + struct.pack("<I", len(chunk)) + chunk + (b"\x00" if len(chunk) & 1 else b"")
    riff = 4 + len(body) + 8 + data_bytes + (data_bytes & 1)
    if data_bytes > MAX_DATA_BYTES:
        raise WavError(f"{data_bytes} bytes of audio do not fit a WAV file (4 GiB): shorten the script or use mono")
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + body + b"data" + struct.pack("<I", data_bytes)


@contextlib.contextmanager
def _atomic(dst: Path) -> Iterator[BinaryIO]:
    """A temp file beside ``dst`` to write; on success synced and renamed onto ``dst``, else removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=".tmp.wav", dir=dst.parent)
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pcm(dst: str | Path, info: WavInfo, pcm: bytes, chunks: Sequence[tuple[bytes, bytes]] = ()) -> WavInfo:
    """Write ``pcm`` (frames of ``info``'s format) as a WAV file, atomically (temp file, then rename)."""
    dst = Path(dst)
    frames = len(pcm) // info.block_align
    pcm = pcm[: frames * info.block_align]
    head = _header(info, len(pcm), chunks)
    with _atomic(dst) as fh:
        fh.write(head)
        fh.write(pcm)
        if len(pcm) & 1:
            fh.write(b"\x00")
    return WavInfo(info.rate, info.channels, info.bits, info.format_tag, frames, len(head), info.block_align)


def write_stem(dst: str | Path, fmt: WavInfo, frames: int, placements: Sequence[tuple[int, str | Path, int]],
               chunks: Sequence[tuple[bytes, bytes]] = ()) -> WavInfo:
    """A stem ``frames`` long, silent except where ``placements`` put cue files: ``(start_frame, file,
    n_frames)`` copies the file's first ``n_frames`` frames to ``start_frame``. Placements must not
    overlap (checked) and every file must have ``fmt``'s format. Written atomically."""
    dst = Path(dst)
    order = sorted(placements, key=lambda p: p[0])
    for (s0, f0, n0), (s1, f1, _) in zip(order, order[1:]):
        if s0 + n0 > s1:
            raise WavError(f"{f0} ({s0}+{n0}) overlaps {f1} (from {s1}) in the stem")
    data = frames * fmt.block_align
    head = _header(fmt, data, chunks)
    with _atomic(dst) as fh:
        fh.write(head)
        fh.truncate(len(head) + data + (data & 1))  # zeros: silence in integer and float PCM alike
        for start, path, n in order:
            info = read_info(path)
            if not info.same_format(fmt):
                raise WavError(f"{path}: {info.rate} Hz {info.channels} ch {info.bits}-bit differs from the "
                               f"stem's {fmt.rate} Hz {fmt.channels} ch {fmt.bits}-bit")
            n = max(0, min(n, info.frames, frames - start))
            fh.seek(len(head) + start * fmt.block_align)
            fh.write(read_pcm(path, info)[: n * fmt.block_align])
    return WavInfo(fmt.rate, fmt.channels, fmt.bits, fmt.format_tag, frames, len(head), fmt.block_align)
