"""What stops a run before it can lose or spoil results: one run per output folder (a lock),
free disk for compaction, and the errors that refuse a run with a clear message.

The lock is `fcntl.flock` on `<out>/.bench.lock`, held for the whole run; the kernel drops it
when the holder exits, however it exits (a kill -9 leaves no stale lock). The file holds the
holder's pid, host and start time, so a refused run can name it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

LOCK_NAME = ".bench.lock"


class RunRefused(RuntimeError):
    """The run cannot start (or go on) safely; the message says why. `exit_code` is what
    `python -m bench.run` exits with."""

    exit_code = 2


class OutputBusy(RunRefused):
    """Another run holds the output folder."""

    exit_code = 4


class DiskSpaceError(RunRefused):
    """Too little free disk for a step that rewrites a file."""

    exit_code = 5


def holder_info() -> dict[str, Any]:
    """What the lock file records about its holder."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


class OutputLock:
    """Exclusive lock on an output folder for a `with` block; raises `OutputBusy` naming the
    holder when another process (or another open in this one) has it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusy(
                f"{self.folder}: another bench.run is writing here ({describe_holder(self.path)}); "
                "wait for it to finish, or give this run another output_root"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder_info()) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:  # the file stays: removing it would race with a new holder
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def describe_holder(path: Path) -> str:
    """'pid 123 on host x since <time>' from a lock file (what is known of it)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "holder unknown: it is still starting"
    return f"pid {info['pid']} on host {info.get('host', '?')} since {info.get('started', '?')}"


def check_free_space(folder: str | Path, need_bytes: int, what: str) -> None:
    """Raise `DiskSpaceError` when `folder`'s filesystem has less than `need_bytes` free."""
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise DiskSpaceError(
            f"{what} needs about {need_bytes / 1e6:.2f} MB free in {folder}, only "
            f"{free / 1e6:.2f} MB left; free some space and rerun (nothing was changed)"
        )


SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")  # one path component, no separators


def check_slug(value: object, what: str) -> str:
    """`value` as a name that is one safe path component (letters, digits, `._+=-`, not
    starting with a dot); raises RunRefused naming `what` otherwise."""
    if not isinstance(value, str) or not SLUG.fullmatch(value):
        raise RunRefused(
            f"{what}={value!r:.80} cannot name a folder: use letters, digits and ._+=- "
            "(not starting with a dot or dash, at most 128 characters)"
        )
    return value


def inside(root: str | Path, path: str | Path, what: str) -> Path:
    """`path` when it stays inside `root` once resolved (symlinks and `..` followed); raises
    RunRefused naming `what` otherwise."""
    root, path = Path(root), Path(path)
    if not path.resolve().is_relative_to(root.resolve()):
        raise RunRefused(f"{what}: {path} leads outside {root}; refusing to write there")
    return path
