"""What stops a run before it can lose or spoil results: one run per output folder (a lock),
free disk for compaction, and the errors that refuse a run with a clear message.

The lock is `fcntl.flock` on `<out>/.bench.lock`, held for the whole run (exclusive) or for
an evaluation (exclusive on the folder it writes, shared on a folder it only reads); the
kernel drops it when the holder exits, however it exits (a kill -9 leaves no stale lock). The
file holds the holder's command, pid, host and start time, so a refused run can name it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable
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


def holder_info(what: str = "bench.run") -> dict[str, Any]:
    """What the lock file records about its holder (`what`: the command holding it)."""
    return {
        "what": what,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def print_waiting(message: str) -> None:
    """The default `on_wait` of a waiting OutputLock: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


class OutputLock:
    """Lock on an output folder for a `with` block. Exclusive (bench.run scoring, an
    evaluation writing its metrics files) or `shared` (reading the folder's results while
    writing elsewhere: readers exclude writers, not each other). When another process (or
    another open in this one) holds a conflicting lock: raises `OutputBusy` naming the holder,
    or with `wait` calls `on_wait` with a line naming it (default: printed on stderr) and
    blocks until it is released. `what` is recorded as the holder's command."""

    def __init__(
        self,
        folder: str | Path,
        *,
        shared: bool = False,
        wait: bool = False,
        what: str = "bench.run",
        on_wait: Callable[[str], None] = print_waiting,
    ):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.shared, self.wait, self.what, self.on_wait = shared, wait, what, on_wait
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(self.path)
            if not self.wait:
                os.close(fd)
                raise OutputBusy(
                    f"{self.folder}: in use by {holder}; wait for it to finish, or give "
                    f"this {self.what} another output folder"
                ) from None
            self.on_wait(f"{self.folder}: {self.what} waiting for {holder} to finish")
            try:
                fcntl.flock(fd, mode)
            except BaseException:
                os.close(fd)
                raise
        # no writer holds it now, so the record is ours (readers at once: one of theirs)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder_info(self.what)) + "\n").encode())
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


def read_holder(path: Path) -> dict[str, Any]:
    """The lock file's record, or {} when it holds none (yet)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe_holder(path: Path, patience_s: float = 1.0) -> str:
    """'bench.run (pid 123 on host x since <time>)' from a lock file (what is known of it).
    A holder writes its record just after it takes the lock, so an empty file is read again
    for up to `patience_s` before the holder is called unknown."""
    deadline = time.monotonic() + patience_s
    info = read_holder(path)
    while "pid" not in info and time.monotonic() < deadline:
        time.sleep(0.01)
        info = read_holder(path)
    if "pid" not in info:
        return "another process (still starting, or reading)"
    return (
        f"{info.get('what', 'bench.run')} (pid {info['pid']} on host {info.get('host', '?')} "
        f"since {info.get('started', '?')})"
    )


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
