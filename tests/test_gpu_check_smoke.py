"""scripts/gpu_check.py on the CPU: the JSON's shape, the budget rule and every part (--smoke)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_check.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
PARTS = ["muq_scorer", "cmi_rm", "train_plan_a", "train_plan_b", "ddp"]


def run_check(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "gpu_check.json"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(out), *args],
        env=ENV,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())


def test_over_budget_parts_are_skipped_and_recorded(tmp_path):
    r = run_check(tmp_path, "--budget", "0")
    assert {"budget_s", "env", "parts", "summary", "elapsed_s", "complete"} <= set(r)
    assert r["complete"] is True and r["env"]["device"] == "cpu" and r["env"]["smoke"] is True
    assert list(r["parts"]) == PARTS
    for part in r["parts"].values():
        assert part["status"] == "skipped" and "over budget" in part["reason"]
    assert r["summary"] == {}


def test_smoke_runs_every_part(tmp_path):  # ~13 s on an idle 2-core machine
    r = run_check(tmp_path)
    parts = r["parts"]
    for name in ("muq_scorer", "cmi_rm"):
        assert parts[name]["status"] == "ok", parts[name]
        rows = parts[name]["batches"]
        assert [b["batch_size"] for b in rows] == [1, 2]
        assert all(b["status"] == "ok" and b["audio_s_per_s"] > 0 for b in rows)
        assert {"build_s", "params", "clip_s"} <= set(parts[name])
    for name in ("train_plan_a", "train_plan_b"):
        p = parts[name]
        assert p["status"] == "ok", p
        assert p["step_s"] > 0 and len(p["step_times_s"]) == 3 and p["clips_per_step"] == 4
    assert parts["train_plan_b"]["params"]["total"] > parts["train_plan_a"]["params"]["total"]
    assert parts["ddp"]["status"] == "skipped"  # no GPUs here
    s = r["summary"]
    assert s["muq_scorer_best_audio_s_per_s"] > 0 and s["train_plan_a_step_s"] > 0
