"""Builders shared by the training tests: composed configs, tiny nets and modules."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from audioscore.models.scorer_module import ScorerLitModule

CONF = str(Path(__file__).resolve().parents[2] / "conf" / "train")
EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))
# debug=tiny shrunk further: 2 steps of 2 groups, 2 s crops, CSV only, no sanity check
FAST = [
    "debug=tiny",
    "logger=csv",
    "data.num_workers=0",
    "data.preprocess.max_dur=2.0",
    "data.groups_per_batch=2",
    "data.max_group_size=4",
    "data.steps_per_epoch=2",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
]


def compose_train(*overrides: str) -> DictConfig:
    """conf/train/train.yaml composed with `overrides`."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def make_cfg(out: Path, corpus: dict, *overrides: str, experiment: str = "muq_lora") -> DictConfig:
    """`experiment=... debug=tiny` shrunk to seconds, on `corpus`, writing under `out`."""
    cfg = compose_train(
        f"experiment={experiment}", f"data.root={corpus['root']}", *FAST, *overrides
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def compose_tiny(experiment: str, tmp: Path) -> DictConfig:
    """`experiment=... debug=tiny` composed from conf/, data and outputs under tmp."""
    return compose_train(
        f"experiment={experiment}",
        "debug=tiny",
        f"paths.data_dir={tmp}",
        f"paths.output_dir={tmp / 'run'}",
    )


def read_csv_rows(run_dir: Path) -> list[dict]:
    (path,) = run_dir.glob("csv/**/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def net_config(pretrained: str | None) -> dict:
    """Config of a tiny plan A net on the MuQ at `pretrained` (a `build_tiny_muq_dir`)."""
    return {
        "_target_": "audioscore.models.components.scorer.VocalScorer",
        "encoder": {
            "_target_": "audioscore.models.components.muq_encoder.MuQEncoder",
            "pretrained": pretrained,
            "layer": 1,
            "lora": {"r": 4, "alpha": 8},
        },
        "head": {
            "_target_": "audiobase.songeval_head.SongEvalHead",
            "_partial_": True,
            "hidden_dim": 32,
            "attn_layers": 1,
            "heads": 2,
        },
    }


def tiny_net_config(timbre: dict | None = None) -> dict:
    """Config of a tiny random plan A (or, with `timbre`, plan B) net."""
    net = net_config(None)
    net["encoder"]["muq_config"] = "tiny"  # random, offline
    if timbre is not None:
        net["timbre"] = timbre
    return net


def tiny_module(adversary: dict | None = None, timbre: dict | None = None) -> ScorerLitModule:
    """A ScorerLitModule on a tiny random net; `adversary`: a `_target_` + `_partial_` config."""
    cfg: dict[str, Any] = {
        "_target_": "audioscore.models.scorer_module.ScorerLitModule",
        "_convert_": "all",
        "net": tiny_net_config(timbre),
        "loss": {"_target_": "audioscore.losses.ListMLELoss"},
        "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
        "adversary": adversary,
    }
    return instantiate(cfg)


def adversary_config(kind: str, **kw: Any) -> dict:
    """conf/train/adversary/<kind>.yaml (a `_partial_` config) with `kw` overrides."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF) / "adversary" / f"{kind}.yaml"))
    return {**cfg, **kw}
