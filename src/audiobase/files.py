"""Atomic writes: a file or directory appears whole under its name, or not at all.

Everything goes to a temporary sibling (same folder, so the rename stays on one filesystem),
is flushed, then renamed over the target. A crash leaves at most a stray `.tmp` sibling; a
reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(
    path: str | os.PathLike, *, is_dir: bool = False, suffix: str = ".tmp"
) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write into; on success it is renamed onto `path`.

    `is_dir`: the caller writes a directory there. When another process has already put a
    non-empty directory at `path`, theirs is kept and ours is dropped (both are complete).
    `suffix` ends the temporary name (writers that pick the format from it want `.tmp.wav`).
    On an exception the temporary sibling is removed and the target is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    if is_dir:
        tmp.unlink()
    else:  # mkstemp makes the file 0600; give it the mode a plain open() would (umask)
        os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        if not is_dir:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError:
            if not (is_dir and path.is_dir()):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Pretty JSON (non-serialisable values as str), written atomically."""
    return write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")
