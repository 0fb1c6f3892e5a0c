"""Every training experiment composes with debug=tiny and builds its data, model and trainer;
every benchmark model config composes (as lightning-hydra-template's test_configs.py)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from helpers.train import CONF, EXPERIMENTS, compose_train
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from audioscore.models.components.grl import Adversary
from audioscore.models.components.scorer import VocalScorer
from audioscore.models.scorer_module import ScorerLitModule

BENCH_CONF = Path(__file__).resolve().parents[1] / "conf" / "bench"
BENCH_MODELS = sorted(p.stem for p in (BENCH_CONF / "model").glob("*.yaml"))


def test_every_experiment_is_found():
    assert {"muq_lora", "muq_lora_grl", "hybrid_campp", "hybrid_campp_grl"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_train_experiment_instantiates(experiment, tmp_path):
    cfg = compose_train(
        f"experiment={experiment}",
        "debug=tiny",
        f"paths.data_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    assert cfg.experiment_name == experiment
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, L.LightningDataModule)
    model = instantiate(cfg.model)
    assert isinstance(model, ScorerLitModule) and isinstance(model.net, VocalScorer)
    # the adversary stays a partial until setup() knows the data's singers
    assert (model.make_adversary is not None) == experiment.endswith("_grl")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert isinstance(trainer, L.Trainer)


@pytest.mark.parametrize("kind", sorted(p.stem for p in (Path(CONF) / "adversary").glob("*.yaml")))
def test_adversary_group_builds_with_the_data_sizes(kind, tmp_path):
    """Every adversary yaml sets all its options: the partial needs only the sizes at setup."""
    cfg = compose_train("experiment=muq_lora_grl", "debug=tiny", f"adversary={kind}")
    module = instantiate(cfg.model)
    module.build_adversary(num_singers=4)
    adv = module.adversary
    assert isinstance(adv, Adversary) and adv.out_dim == 4
    assert adv.in_dim == module.net.pooled_dim  # plan A: no clip timbre dims to leave out
    assert (adv.max_weight, adv.weight) == (
        cfg.model.adversary.max_weight,
        cfg.model.adversary.weight,
    )


@pytest.mark.parametrize("model", BENCH_MODELS)
def test_bench_model_composes(model):
    with initialize_config_dir(config_dir=str(BENCH_CONF), version_base="1.3"):
        cfg = compose("bench", overrides=[f"model={model}"])
    assert cfg.model.name and {"_target_", "class_path"} & set(cfg.model.keys())
