"""audioscore.studies.compare (scripts/compare_plans.py) on synthetic CSVLogger run directories, and
the singer probe of audioscore.studies.probe (scripts/probe_singer.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from audioscore.studies import compare as compare_plans
from audioscore.studies import probe as probe_singer


def fake_run(
    root: Path,
    name: str,
    experiment: str,
    srcc: list[float],
    adv: list[float] | None,
    mae: list[float] | None = None,
):
    run = root / name
    csv_dir = run / "csv" / "version_0"
    csv_dir.mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"experiment": experiment}}}})
    )
    cols = ["epoch", "step", "train/loss", "val/srcc", "val/pair_acc"]
    cols += (["val/adv_acc"] if adv else []) + (["val/mae"] if mae else [])
    with open(csv_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for i, s in enumerate(srcc):
            w.writerow({"epoch": i, "step": 10 * i + 5, "train/loss": 1.0 / (i + 1)})  # train row
            row = {"epoch": i, "step": 10 * (i + 1), "val/srcc": s, "val/pair_acc": 0.5 + s / 2}
            if adv:
                row["val/adv_acc"] = adv[i]
            if mae:
                row["val/mae"] = mae[i]
            w.writerow(row)
    return run


def test_table_and_plots(tmp_path):
    a = fake_run(tmp_path, "plan_a", "muq_lora", [0.1, 0.5, 0.4], None, mae=[9.0, 4.5, 6.0])
    b = fake_run(tmp_path, "plan_b_grl", "hybrid_campp_grl", [0.2, 0.3, 0.6], [0.9, 0.5, 0.3])
    res = compare_plans.compare([str(a), str(b), str(tmp_path / "missing")], tmp_path / "out")
    rows = {r["run"]: r for r in res["rows"]}
    assert rows["muq_lora"]["srcc best"] == "0.500"
    assert rows["muq_lora"]["srcc final"] == "0.400"
    assert rows["hybrid_campp_grl"]["adv_acc best"] == "0.300"
    assert rows["muq_lora"]["adv_acc final"] == "-"
    assert rows["hybrid_campp_grl"]["steps"] == "30"
    assert rows["muq_lora"]["mae best"] == "4.500" and rows["muq_lora"]["mae final"] == "6.000"
    assert rows["hybrid_campp_grl"]["mae best"] == "-"
    md = (tmp_path / "out" / "plans.md").read_text()
    assert "| muq_lora |" in md and "hybrid_campp_grl" in md
    names = sorted(p.name for p in res["plots"])
    assert names == ["val_adv_acc.png", "val_mae.png", "val_pair_acc.png", "val_srcc.png"]
    assert all(p.stat().st_size > 1000 for p in res["plots"])
    assert len(res["failed"]) == 1 and "missing" in res["failed"][0]


def test_no_readable_run_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(compare_plans.RunLogError, match="empty.*metrics.csv"):
        compare_plans.compare([str(tmp_path / "empty")], tmp_path / "out")


def test_duplicate_labels_stay_distinct(tmp_path):
    a = fake_run(tmp_path, "seed0", "muq_lora", [0.1], None)
    b = fake_run(tmp_path, "seed1", "muq_lora", [0.2], None)
    res = compare_plans.compare([str(a), str(b)], tmp_path / "out")
    assert [r["run"] for r in res["rows"]] == ["muq_lora", "muq_lora (seed1)"]


# --- audioscore.studies.probe: the probe itself on features with known singer information ---


def test_probe_separates_informative_from_blind_features():
    rng = np.random.default_rng(0)
    labels = [f"s{i % 4}" for i in range(80)]
    y = np.array([i % 4 for i in range(80)])
    centres = rng.normal(size=(4, 16)) * 3.0
    informative = centres[y] + rng.normal(size=(80, 16))
    blind = rng.normal(size=(80, 16))
    good = probe_singer.fit_probe(informative, labels)
    bad = probe_singer.fit_probe(blind, labels)
    assert good["chance"] == bad["chance"] == 0.25
    assert good["accuracy"] > 0.9 and good["margin"] > 0.6
    assert bad["margin"] < 0.2
    assert good["folds"] == 5 and good["dim"] == 16


def test_probe_part_selection():
    pooled = np.arange(20.0).reshape(2, 10)
    assert probe_singer.select_part(pooled, 3, "audio").shape == (2, 7)
    assert probe_singer.select_part(pooled, 3, "timbre").tolist() == pooled[:, -3:].tolist()
    assert probe_singer.select_part(pooled, 0, "audio").shape == (2, 10)
    with pytest.raises(ValueError, match="timbre branch"):
        probe_singer.select_part(pooled, 0, "timbre")
    with pytest.raises(ValueError, match="1 clips per singer|>= 2 clips"):
        probe_singer.fit_probe(np.zeros((3, 2)), ["a", "a", "b"])


def test_probe_penalty_reaches_the_classifier():
    """C (inverse L2 penalty) is the probe's: a different C fits a different probe."""
    rng = np.random.default_rng(1)
    labels = [f"s{i % 3}" for i in range(60)]
    y = np.array([i % 3 for i in range(60)])
    x = rng.normal(size=(60, 30)) + 0.4 * np.eye(3)[y] @ rng.normal(size=(3, 30))
    strong = probe_singer.fit_probe(x, labels, C=1e-4)
    free = probe_singer.fit_probe(x, labels, C=1e4)
    assert strong["C"] == 1e-4 and free["C"] == 1e4
    assert strong["accuracy"] != free["accuracy"]
