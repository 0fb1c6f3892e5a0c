"""`python -m bench.run models=[a,b]`: several models on the same data in one command, each
composed as `model=<name>` with the command's other overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_models_list_scores_every_model_on_the_same_rows(tmp_path, synth_corpus):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "bench.run", "models=[signal_stats,cmi_rm_tiny]"]
    cmd += [f"dataset.jsonl={synth_corpus['bench']}", f"dataset.root={synth_corpus['root']}"]
    cmd += [f"output_root={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    cmd += ["subset=PAM", "plots=false"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = {}
    for model in ("signal_stats", "cmi_rm_tiny"):
        results = tmp_path / "out" / model / "synth" / "results.jsonl"
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        keys[model] = sorted(r["bench_row_key"] for r in rows)
        assert rows and all(r["benchmark_dataset"] == "PAM" for r in rows)
    assert keys["signal_stats"] == keys["cmi_rm_tiny"]  # the same selection for both
