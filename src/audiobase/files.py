"""Atomic writes (a file or directory appears whole under its name, or not at all) and
folder walks that report the links they cannot follow.

Everything goes to a temporary sibling (same folder, so the rename stays on one filesystem),
is flushed, then renamed over the target. A reader never sees half a file. A killed writer
leaves a stray `.<name>.<random>.tmp` sibling; the next write to the same target removes
those older than `STALE_TEMP_AGE_S` (no live writer keeps one untouched that long).

`walk_files` lists a folder's files by suffix and returns the symlinks that lead nowhere
(broken or looping) beside them, so a caller can report them instead of skipping them silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STALE_TEMP_AGE_S = 24 * 3600  # a temp sibling untouched this long belongs to a dead writer


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
    remove_stale_temps(path, suffix)
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


def remove_stale_temps(path: Path, suffix: str = ".tmp") -> list[Path]:
    """Remove temporary siblings of `path` that interrupted writes left (named as `atomic_path`
    names them: `.<name>.<8 random chars><suffix>`) untouched for `STALE_TEMP_AGE_S`; returns
    what was removed. Fresh ones may belong to a live writer and stay."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(suffix))
    prefix = f".{path.name}."
    cutoff = time.time() - STALE_TEMP_AGE_S
    removed = []
    with os.scandir(path.parent) as entries:
        for entry in entries:
            if not entry.name.startswith(prefix) or not pattern.fullmatch(entry.name):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:  # removed by another writer first, or not ours to remove
                continue
            removed.append(Path(entry.path))
    return removed


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


def walk_files(root: str | os.PathLike, suffixes: Collection[str]) -> tuple[list[Path], list[Path]]:
    """Files under `root` (recursive) whose lower-cased suffix is in `suffixes`, and the
    symlinks with such a name that lead nowhere (their target is missing, or they loop);
    both sorted by path."""
    files, broken = [], []
    for p in Path(root).rglob("*"):
        if p.suffix.lower() not in suffixes:
            continue
        if p.is_file():
            files.append(p)
        elif p.is_symlink() and not p.exists():  # exists() is False for a loop too
            broken.append(p)
    return sorted(files, key=str), sorted(broken, key=str)
