"""bench.guard: the output-folder lock (who holds it, refusing a second holder, release) and the
free-disk check, on a tmp folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import threading

import pytest

from bench.guard import (
    LOCK_NAME,
    DiskSpaceError,
    OutputBusy,
    OutputLock,
    RunRefused,
    check_free_space,
    describe_holder,
)


def test_refusals_exit_with_their_own_codes():
    assert (RunRefused.exit_code, OutputBusy.exit_code, DiskSpaceError.exit_code) == (2, 4, 5)
    assert issubclass(OutputBusy, RunRefused) and issubclass(DiskSpaceError, RunRefused)


def test_lock_creates_the_folder_and_records_its_holder(tmp_path):
    out = tmp_path / "a" / "b"
    with OutputLock(out) as lock:
        info = json.loads((out / LOCK_NAME).read_text())
        assert lock.path == out / LOCK_NAME
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["started"].endswith("+00:00")


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    with OutputLock(tmp_path), pytest.raises(OutputBusy) as busy:
        OutputLock(tmp_path).acquire()
    msg = str(busy.value)
    assert msg.startswith(f"{tmp_path}: in use by bench.run (pid {os.getpid()} ")
    assert f"on host {socket.gethostname()} since " in msg and "another output folder" in msg


def test_release_lets_the_next_run_lock_and_keeps_the_file(tmp_path):
    lock = OutputLock(tmp_path).acquire()
    lock.release()
    lock.release()  # twice is harmless
    assert (tmp_path / LOCK_NAME).exists()
    with OutputLock(tmp_path):
        pass


def test_a_new_holder_overwrites_the_old_record(tmp_path):
    (tmp_path / LOCK_NAME).write_text('{"pid": 1, "host": "old", "started": "then"}' + " " * 99)
    with OutputLock(tmp_path):
        text = (tmp_path / LOCK_NAME).read_text()
    assert text.count("\n") == 1 and json.loads(text)["pid"] == os.getpid()


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"host": "h"}'])
def test_an_unreadable_or_empty_lock_file_is_a_holder_still_starting(tmp_path, text):
    (tmp_path / LOCK_NAME).write_text(text)
    assert (
        describe_holder(tmp_path / LOCK_NAME, 0.05)
        == "another process (still starting, or reading)"
    )


def test_missing_lock_file_is_a_holder_still_starting(tmp_path):
    assert (
        describe_holder(tmp_path / LOCK_NAME, 0) == "another process (still starting, or reading)"
    )


def test_a_record_written_just_after_the_lock_is_taken_names_the_holder(tmp_path):
    """The holder truncates, then writes its record: a refused run reading in between waits."""
    path = tmp_path / LOCK_NAME
    path.write_text("")
    later = threading.Timer(0.2, path.write_text, ['{"pid": 7, "host": "h", "started": "t"}'])
    later.start()
    try:
        assert describe_holder(path, patience_s=5) == "bench.run (pid 7 on host h since t)"
    finally:
        later.join()


def test_describe_holder_fills_what_is_missing(tmp_path):
    (tmp_path / LOCK_NAME).write_text('{"pid": 7}')
    assert describe_holder(tmp_path / LOCK_NAME) == "bench.run (pid 7 on host ? since ?)"
    (tmp_path / LOCK_NAME).write_text('{"pid": 7, "host": "h", "started": "t", "what": "w"}')
    assert describe_holder(tmp_path / LOCK_NAME) == "w (pid 7 on host h since t)"


def test_free_space_check_passes_when_enough_and_names_the_step_when_not(tmp_path):
    check_free_space(tmp_path, 1, "compaction")
    with pytest.raises(DiskSpaceError, match=r"^compaction needs about 1000000000000000\.00 MB"):
        check_free_space(tmp_path, 10**21, "compaction")
    with pytest.raises(DiskSpaceError, match=rf"free in {tmp_path}, only \d+\.\d\d MB left"):
        check_free_space(tmp_path, 10**21, "compaction")


def test_lock_file_is_created_read_write_for_everyone_the_umask_allows(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with OutputLock(tmp_path):
        mode = stat.S_IMODE((tmp_path / LOCK_NAME).stat().st_mode)
    assert mode == 0o666 & ~umask


def test_free_space_message_gives_megabytes_left(tmp_path):
    with pytest.raises(DiskSpaceError, match=r"only (\d+\.\d\d) MB left") as err:
        check_free_space(tmp_path, 10**21, "compaction")
    left = float(re.search(r"only (\d+\.\d\d) MB left", str(err.value)).group(1))
    assert left <= shutil.disk_usage(tmp_path).total / 1e6
