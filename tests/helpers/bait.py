"""Files an attacker plants among frames: Ghostscript bait, decompression bombs, and a fake `gs` that tells on callers."""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path

# A real EPS: Pillow identifies it by content whatever its name says, and rendering it runs Ghostscript.
EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 16 16
%%EndComments
newpath 0 0 moveto 16 0 lineto 16 16 lineto closepath fill
showpage
%%EOF
"""


def write_eps(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(EPS)
    return path


def fake_ghostscript(folder: Path) -> tuple[Path, Path]:
    """A folder holding an executable `gs` that records each call in a log (and fails); returns (folder, log).

    Put the folder first on PATH: a process that runs Ghostscript creates the log.
    """
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "gs-called.log"
    script = folder / "gs"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder, log


def path_with(folder: Path) -> dict[str, str]:
    """This process's environment with ``folder`` first on PATH."""
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}


def write_png_bomb(path: Path, width: int = 13000, height: int = 13000) -> Path:
    """A 1-bit black PNG of ``width`` x ``height``: about 20 KB on disk, hundreds of MB once decoded to RGB."""
    row = b"\x00" + bytes((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path
