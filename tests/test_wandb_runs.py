"""What an offline wandb run holds, read from the run file wandb would sync: the resolved
config (every hyperparameter), `tags=`, the data's own name, group = experiment name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.train import make_cfg
from helpers.wandb_offline import read_offline_run

from audioscore.train import train

DOC = Path(__file__).resolve().parents[1] / "docs" / "wandb.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_offline_run_holds_config_tags_group_and_data_name(
    tmp_path, synth_corpus, monkeypatch, capfd
):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = make_cfg(
        tmp_path,
        synth_corpus,
        "logger=wandb",
        "tags=[my-sweep,lr-test]",
        "model.optimizer.lr=0.00123",
        "export=false",
        experiment="hybrid_campp_grl",
    )
    train(cfg)
    assert "anonymous setting" not in capfd.readouterr().err  # no deprecated wandb setting
    run = read_offline_run(tmp_path)
    assert run.group == "hybrid_campp_grl"  # the experiment: its seeds form one group
    data = synth_corpus["root"].name  # the user's folder, not the debug overlay's "synth"
    assert {"plan:B", "experiment:hybrid_campp_grl", f"data:{data}", "my-sweep", "lr-test"} <= set(
        run.tags
    )
    assert run.config["data_name"] == data
    assert run.config["model"]["optimizer"]["lr"] == pytest.approx(0.00123)
    assert run.config["data"]["train_files"] == ["train.json"]
    assert run.config["trainer"]["max_epochs"] == 1 and run.config["seed"] == 0
    # every metric the dashboard recipe names is one the run logs
    named = set(re.findall(r"`((?:train|val|time|lr)[-/][\w/-]+)`", DOC.read_text()))
    assert {"train/loss", "val/srcc", "val/adv_acc"} <= named
    assert named <= run.metrics, named - run.metrics
