"""Cross-model table after a multirun: mean ± std per experiment of best val SRCC, MAE at that
validation and the singer-probe margin, from the run folders alone (no wandb)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audioscore.studies.compare import compare_experiments, expand_specs, mean_std

ROOT = Path(__file__).resolve().parents[1]


def fake_run(root: Path, name: str, experiment: str, srcc: list[float], mae: list[float]) -> Path:
    """A run folder as Hydra and Lightning's CSVLogger leave it, with these validations."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    hydra = {"hydra": {"runtime": {"choices": {"experiment": experiment}}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    lines = ["epoch,step,val/mae,val/srcc"]
    lines += [f"{i},{10 * (i + 1)},{m},{s}" for i, (s, m) in enumerate(zip(srcc, mae, strict=True))]
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "csv" / "version_0" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_mean_and_std_per_experiment_from_a_sweep_folder(tmp_path):
    sweep = tmp_path / "multirun"
    fake_run(sweep, "0", "muq_lora", [0.5, 0.7, 0.6], [9.0, 7.0, 8.0])
    fake_run(sweep, "1", "muq_lora", [0.8, 0.9], [6.0, 5.0])
    fake_run(sweep, "2", "hybrid_campp", [0.4, 0.3], [12.0, 11.0])
    assert len(expand_specs([str(sweep)])) == 3
    res = compare_experiments([str(sweep)], tmp_path / "out")
    rows = {r["experiment"]: r for r in res["rows"]}
    # muq_lora: best SRCC 0.7 (MAE 7 there) and 0.9 (MAE 5 there)
    assert rows["muq_lora"]["val/srcc"] == f"0.800 ± {math.sqrt(0.02):.3f}"
    assert rows["muq_lora"]["val/mae"] == f"6.000 ± {math.sqrt(2):.3f}"
    assert (
        rows["hybrid_campp"]["val/srcc"] == "0.400 ± 0.000" and rows["hybrid_campp"]["runs"] == "1"
    )
    assert rows["muq_lora"]["probe margin"] == "-"  # no --probe-data
    assert Path(res["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| muq_lora | 2 |" in (tmp_path / "out" / "experiments.md").read_text()


def test_mean_std_ignores_missing_values():
    assert mean_std([1.0, math.nan, 3.0]) == (2.0, math.sqrt(2), 2)
    mean, std, n = mean_std([math.nan])
    assert n == 0 and math.isnan(mean) and math.isnan(std)


@pytest.mark.slow
def test_multirun_then_one_command_writes_the_table(tmp_path, synth_corpus):
    """`-m experiment=muq_lora,hybrid_campp seed=0,1` on the tiny configs, then the table with
    probe margins from the exports, wandb off."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    sweep = tmp_path / "sweep"
    train = [sys.executable, "-m", "audioscore.train", "-m"]
    train += ["experiment=muq_lora,hybrid_campp", "seed=0,1", "debug=tiny", "logger=csv"]
    train += [f"data.root={synth_corpus['root']}", f"paths.data_dir={tmp_path}"]
    train += ["trainer.max_epochs=1", "data.steps_per_epoch=3", f"hydra.sweep.dir={sweep}"]
    subprocess.run(train, cwd=ROOT, env=env, check=True, timeout=1200)
    compare = [sys.executable, "scripts/compare_plans.py", "--by-experiment", str(sweep)]
    # the probe cross-validates per singer: the training clips have several per singer
    compare += ["--probe-data", str(synth_corpus["train"]), "--out", str(tmp_path / "out")]
    subprocess.run(compare, cwd=ROOT, env=env, check=True, timeout=600)
    table = (tmp_path / "out" / "experiments.md").read_text()
    for exp in ("muq_lora", "hybrid_campp"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {exp} |"))
        assert "| 2 |" in row and row.count("±") == 3, row
