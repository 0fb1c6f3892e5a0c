"""Decompression bombs: long silent FLAC files a few kB large, with or without their length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

_STREAMINFO_TOTAL = 8 + 10  # "fLaC", the block header, then 10 bytes before the sample count


def write_silent_flac(
    path: Path, seconds: int, sr: int = 8000, declare_length: bool = True
) -> Path:
    """`seconds` of digital silence as 16-bit FLAC (about 24 bytes per second of audio).

    `declare_length=False` zeroes STREAMINFO's total-sample count, as a streamed encoder
    does: the length is then known only by decoding the whole file."""
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        block = np.zeros(sr * 10, np.float32)
        for _ in range(seconds // 10):
            f.write(block)
        f.write(np.zeros(sr * (seconds % 10), np.float32))
    if not declare_length:
        data = bytearray(path.read_bytes())
        assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
        field = int.from_bytes(data[_STREAMINFO_TOTAL : _STREAMINFO_TOTAL + 8], "big")
        field &= ~((1 << 36) - 1)  # the low 36 bits: total samples (0 = unknown)
        data[_STREAMINFO_TOTAL : _STREAMINFO_TOTAL + 8] = field.to_bytes(8, "big")
        path.write_bytes(bytes(data))
    return path
