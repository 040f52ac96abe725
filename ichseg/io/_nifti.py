"""Detect truncated NIfTI files, which ITK's NIfTI reader silently zero-fills."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

_CHUNK = 1 << 20


def _expected_size(header: bytes) -> int | None:
    """vox_offset + data bytes from a NIfTI-1/-2 header, or None if the header is not understood."""
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            minimum_offset = 352
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            dim = struct.unpack(endian + "8q", header[16:80])
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            minimum_offset = 544
            break
    else:
        return None
    ndim = dim[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    voxels = 1
    for n in dim[1 : ndim + 1]:
        voxels *= max(int(n), 1)
    return max(vox_offset, minimum_offset) + voxels * bitpix // 8


def _gzip_length(path: Path) -> int | None:
    """Uncompressed length of a gzip file, or None when the stream is truncated/corrupted."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(_CHUNK):
                total += len(block)
    except (EOFError, OSError, zlib.error):
        return None
    return total


def nifti_is_truncated(path: str | Path) -> bool:
    """True when a .nii/.nii.gz file holds fewer bytes than its header announces."""
    p = Path(path)
    compressed = p.name.lower().endswith(".gz")
    try:
        with gzip.open(p, "rb") if compressed else open(p, "rb") as f:
            header = f.read(544)
    except (EOFError, OSError, zlib.error):
        return True
    expected = _expected_size(header)
    if expected is None:
        return False  # not a header we understand: leave the verdict to ITK
    if not compressed:
        return p.stat().st_size < expected
    with open(p, "rb") as f:  # the gzip trailer holds the uncompressed size modulo 2**32
        f.seek(-4, 2)
        if int.from_bytes(f.read(4), "little") == expected % (1 << 32):
            return False
    length = _gzip_length(p)  # unusual trailer (e.g. extra bytes, several members): decompress to be sure
    return length is None or length < expected
