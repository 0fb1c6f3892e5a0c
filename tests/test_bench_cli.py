"""conf/bench composition, the `python -m bench.run` CLI, several models as a Hydra multirun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.bench import make_toy_bench
from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).parents[1] / "conf" / "bench")
ENV = {
    **os.environ,
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toycli")
    make_toy_bench(root)
    return root


def toy_overrides(root: Path, out: Path) -> list[str]:
    return [
        f"dataset.jsonl={root / 'bench.jsonl'}",
        f"dataset.root={root}",
        "dataset.name=toy",
        f"output_root={out}",
        "n_boot=20",
        "plots=false",
        "num_workers=0",
    ]


BASELINE = ["model.class_path=bench.baselines:SignalStatsReward", "+model.init_kwargs.sr=16000"]


def test_default_configs_compose():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("bench")
        assert cfg.dataset.name == "synth" and cfg.dataset.jsonl == "data/synth/bench.jsonl"
        assert cfg.model.name == "cmi_rm_tiny" and cfg.batch_size > 0
        real = compose("bench", overrides=["dataset=cmi_rewardbench", "model=cmi_rm"])
        assert real.dataset.jsonl == "data/all_test.jsonl" and real.dataset.root == "data"


def test_multirun_runs_each_model_with_the_shared_overrides(toy, tmp_path):
    """`-m model=a,b`: each model in turn, every other override applied to both; the exit
    status is the worst job's (3: too many failed rows) once all have run."""
    cmd = [sys.executable, "-m", "bench.run", "-m", "model=signal_stats,cmi_rm_tiny"]
    cmd += [*toy_overrides(toy, tmp_path / "out"), "max_fail_frac=0.01", "n_boot=7"]
    p = subprocess.run(cmd, env=ENV, cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 3, p.stderr[-2000:]
    assert (tmp_path / "outputs/models/cmi_rm_tiny/model.safetensors").is_file()  # built here
    for name in ("signal_stats", "cmi_rm_tiny"):
        out = tmp_path / "out" / name / "toy"
        stats = json.loads((out / "statistics.json").read_text())
        assert stats["failed"] == 2 and stats["run"]["scored_rows"] == 33, name
        assert stats["run"]["config"]["model"]["name"] == name
        assert json.loads((out / "metrics.json").read_text())["bootstrap"]["n_boot"] == 7
    assert p.stdout.index("signal_stats/toy:") < p.stdout.index("cmi_rm_tiny/toy:")


def test_cli_exits_nonzero_on_too_many_failures(toy, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "model=custom",
        *BASELINE,
        *toy_overrides(toy, tmp_path),
    ]
    cmd += ["subset=MusicEval"]  # 2 of 7 rows are broken
    p = subprocess.run(cmd + ["max_fail_frac=0.05"], env=ENV, capture_output=True, text=True)
    assert p.returncode == 3, p.stderr[-2000:]
    assert "rows failed (max_fail_frac=0.05)" in p.stdout + p.stderr
    out = tmp_path / "custom" / "toy"
    assert json.loads((out / "statistics.json").read_text())["failed"] == 2
    p = subprocess.run(
        [sys.executable, "-m", "bench.evaluate", str(out / "results.jsonl"), "--n-boot", "0"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and "MusicEval,musicality,5," in p.stdout


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_matches_uninterrupted(toy, tmp_path):
    """A real kill -9 between batches; the rerun scores only what is missing."""
    base = [sys.executable, "-m", "bench.run", "model=custom", *BASELINE, "batch_size=2"]
    ref = subprocess.run(base + toy_overrides(toy, tmp_path / "ref") + ["max_fail_frac=1"], env=ENV)
    assert ref.returncode == 0
    slow = ["model.class_path=helpers.bench:SlowSignalStats", "+model.init_kwargs.delay_s=0.3"]
    over = toy_overrides(toy, tmp_path / "kill") + ["max_fail_frac=1", *slow]  # time to kill
    proc = subprocess.Popen(
        base + over, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    res = tmp_path / "kill" / "custom" / "toy" / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not res.exists() or len(res.read_text().splitlines()) < 6):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = [json.loads(x) for x in res.read_text().splitlines() if x.endswith("}")]
    assert 6 <= len(written) < 33
    again = subprocess.run(base + over, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    stats = json.loads((res.parent / "statistics.json").read_text())
    assert stats["run"]["skipped_rows"] == sum(r["status"] == "ok" for r in written)
    assert stats["run"]["scored_rows"] + stats["run"]["skipped_rows"] == 33
    a = json.loads((tmp_path / "ref" / "custom" / "toy" / "metrics.json").read_text())
    b = json.loads((res.parent / "metrics.json").read_text())
    assert a["summary"] == b["summary"] and a["detail"] == b["detail"]


def test_throughput_script_reports_both_loops(toy, tmp_path):
    over = ["model=custom", *BASELINE, *toy_overrides(toy, tmp_path), "subset=PAM"]
    script = Path(__file__).parents[1] / "scripts" / "bench_throughput.py"
    p = subprocess.run(
        [sys.executable, str(script), *over], env=ENV, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "custom" / "toy" / "throughput.json").read_text())
    assert r["runner"]["audio_seconds"] == pytest.approx(r["one_clip_loop"]["audio_seconds"])
    assert r["runner"]["audio_s_per_s"] > 0 and r["one_clip_loop"]["clips_ok"] == 12
    assert r["speedup"] == pytest.approx(
        r["runner"]["audio_s_per_s"] / r["one_clip_loop"]["audio_s_per_s"]
    )
