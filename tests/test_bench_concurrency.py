"""Two runs on one output folder: the second is refused naming the first, nothing is lost;
compaction refuses up front when the disk is short."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.bench import SR, SlowSignalStats, make_cfg, make_toy_bench

from bench.guard import LOCK_NAME, DiskSpaceError, OutputBusy, OutputLock
from bench.run import run, run_cli
from bench.store import compact

ENV = {
    **os.environ,
    "WANDB_MODE": "offline",
    "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toylock")
    make_toy_bench(root)
    return root


def keys(out: Path) -> set[str]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {json.loads(x)["bench_row_key"] for x in lines}


def wait_for_holder(lock: Path, timeout: float = 60.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return json.loads(lock.read_text())
        except (OSError, ValueError):
            time.sleep(0.02)
    raise AssertionError(f"{lock} never named a holder")


def test_second_run_on_a_busy_folder_is_refused_and_loses_nothing(toy, tmp_path):
    """Slice 0-20 runs in a thread; slice 20- on the same folder meanwhile is refused naming
    the holder; the first keeps every row; rerun afterwards, the second adds the rest."""
    first = make_cfg(toy, tmp_path, end_idx=20, max_fail_frac=1.0)
    second = make_cfg(toy, tmp_path, start_idx=20, max_fail_frac=1.0)
    out = tmp_path / "signal_stats" / "toy"
    done: dict = {}

    def slow_run():
        done["info"] = run(first, model=SlowSignalStats(delay_s=0.15, sr=SR))[1]

    t = threading.Thread(target=slow_run)
    t.start()
    holder = wait_for_holder(out / LOCK_NAME)
    with pytest.raises(OutputBusy, match=f"pid {os.getpid()} on host {holder['host']}"):
        run(second)
    assert t.is_alive()  # refused while the first was still scoring
    t.join()
    assert len(done["info"]["scored_keys"]) == 20 and keys(out) == set(done["info"]["scored_keys"])
    _, info = run(second)  # the folder is free again
    assert len(info["scored_keys"]) == 13 and len(keys(out)) == 33


def test_cli_exit_status_names_the_holder(toy, tmp_path, caplog):
    cfg = make_cfg(toy, tmp_path)
    with OutputLock(tmp_path / "signal_stats" / "toy"):
        assert run_cli(cfg) == OutputBusy.exit_code
    assert f"pid {os.getpid()}" in caplog.text and "in use by bench.run" in caplog.text
    assert run_cli(make_cfg(toy, tmp_path, max_fail_frac=1.0)) == 0  # released on exit


@pytest.mark.slow  # two CLI processes, ~25 s; the threaded test above covers the same in-process
def test_two_cli_processes_at_once(toy, tmp_path):
    """The user's case: two `python -m bench.run` slices on one folder at the same time."""
    cmd = [sys.executable, "-m", "bench.run", "model=custom", "batch_size=2", "max_fail_frac=1"]
    cmd += [
        "model.class_path=helpers.bench:SlowSignalStats",
        f"+model.init_kwargs.sr={SR}",
        "+model.init_kwargs.delay_s=0.4",
        f"dataset.jsonl={toy / 'bench.jsonl'}",
        f"dataset.root={toy}",
        "dataset.name=toy",
        f"output_root={tmp_path}",
        "n_boot=0",
        "plots=false",
        "num_workers=0",
    ]
    kw = {"env": ENV, "cwd": tmp_path, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [
        subprocess.Popen([*cmd, "end_idx=20"], text=True, **kw),
        subprocess.Popen([*cmd, "start_idx=20"], text=True, **kw),
    ]
    results = [(p.pid, p.wait(timeout=300), p.communicate()) for p in procs]
    out = tmp_path / "custom" / "toy"
    codes = sorted(rc for _, rc, _ in results)
    if codes == [0, 0]:  # one finished before the other started: both complete
        assert len(keys(out)) == 33
        return
    assert codes == [0, OutputBusy.exit_code], [r[2][1][-2000:] for r in results]
    (win_pid, _, (win_out, _)), (_, _, lose) = sorted(results, key=lambda r: r[1])
    assert f"pid {win_pid} on host" in "".join(lose)  # names the holder
    n_won = int(win_out.split(" rows,")[0].rsplit(" ", 1)[-1])
    assert len(keys(out)) == n_won in (13, 20)  # every row of the winner is there


def test_compaction_refuses_up_front_when_the_disk_is_short(tmp_path, monkeypatch):
    res = tmp_path / "results.jsonl"
    rec = {"bench_row_key": "0-x", "bench_row_index": 0, "status": "ok", "pad": "x" * 5000}
    res.write_text(json.dumps(rec) + "\n")
    before = res.read_bytes()
    usage = shutil.disk_usage(tmp_path)  # 1000 bytes free: less than the file needs again
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(DiskSpaceError, match=r"compacting .*results.jsonl needs about 0.01 MB"):
        compact(res)
    assert res.read_bytes() == before
