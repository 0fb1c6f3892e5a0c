"""Every config composes, builds, and binds: each key it names is read by the code.

Training: every experiment (with every debug overlay) and every option of every group composes
and builds its data, model and trainer. Benchmark: every reward-model config composes and builds
offline (those whose published weights are absent fail with MissingWeightsError's one line);
every dataset and preset composes. Binding (helpers.binding): keys of `_target_` nodes must be
used parameters of their targets; settings keys (the runner's options, `dataset`, the training
run's own keys) must be read while `bench.run.main` / `audioscore.train.train` run on tiny data.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import lightning as L
import pytest
from helpers.bench import make_toy_bench
from helpers.binding import (
    track_reads,
    unbound_kwargs,
    unbound_target_keys,
    unread_keys,
)
from helpers.train import CONF, EXPERIMENTS, compose_train, make_cfg
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from audiobase.weights import MissingWeightsError
from audioscore.models.components.grl import Adversary
from audioscore.models.components.scorer import VocalScorer
from audioscore.models.scorer_module import ScorerLitModule
from bench.baselines import SignalStatsReward
from rewards.base import RewardModel
from rewards.build import RESERVED, build_reward_model, compose_model_config

BENCH_CONF = Path(__file__).resolve().parents[1] / "conf" / "bench"
BENCH_MODELS = sorted(p.stem for p in (BENCH_CONF / "model").glob("*.yaml"))
# configs whose published weights are not in the checkout: building them names what to fetch
NEEDS_WEIGHTS = {"audioscore", "audioscore_plan_b", "cmi_rm", "songeval"}
# group -> the package it is chosen at (conf/train/train.yaml, experiment defaults)
PACKAGE = {"campp": "campp@model.net.timbre", "encoder": "encoder@model.net.encoder"}
GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in Path(CONF).iterdir()
    if group.is_dir() and group.name not in {"experiment", "debug", "hydra"}
    for option in group.glob("*.yaml")
)
DEBUGS = sorted(p.stem for p in (Path(CONF) / "debug").glob("*.yaml"))
# keys of `_target_` nodes that audioscore.train reads itself (checked read in the tracked run)
TRAIN_READS = {"data": {"name"}}  # data_name(cfg.data): the wandb tag data:<name>


# --- training -----------------------------------------------------------------------------


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


@pytest.mark.parametrize("debug", DEBUGS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_train_experiment_keys_bind_to_their_targets(experiment, debug):
    cfg = compose_train(f"experiment={experiment}", f"debug={debug}")
    assert unbound_target_keys(cfg, TRAIN_READS) == []


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_train_group_option_keys_bind_to_their_targets(group, option):
    cfg = compose_train("experiment=hybrid_campp_grl", f"{PACKAGE.get(group, group)}={option}")
    assert unbound_target_keys(cfg, TRAIN_READS) == []


@pytest.mark.parametrize(("group", "option"), [g for g in GROUP_OPTIONS if g[0] == "trainer"])
def test_train_trainer_option_builds(group, option, tmp_path):
    cfg = compose_train(
        "experiment=muq_lora", "debug=tiny", f"trainer={option}", f"paths.output_dir={tmp_path}"
    )
    with open_dict(cfg):  # on this CPU-only machine: the option's keys, Lightning's CPU device
        cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
        cfg.trainer.pop("strategy", None)
        cfg.trainer.pop("sync_batchnorm", None)
    assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)


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


def test_training_run_reads_every_setting(tmp_path, synth_corpus, monkeypatch):
    """A tiny plan B + GRL run reads every key of train.yaml and paths/ (the wandb logger's
    tags and data name from the default logger group), and the keys TRAIN_READS names."""
    from audioscore.train import train
    from audioscore.training.loggers import build_loggers

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cache = f"paths.root_dir={tmp_path}"  # data_dir (the CAM++ feature cache) out of the checkout
    cfg = make_cfg(tmp_path / "run", synth_corpus, cache, experiment="hybrid_campp_grl")
    with_wandb = make_cfg(tmp_path / "wandb", synth_corpus, cache, "logger=default")
    with track_reads() as reads:
        train(cfg)
        build_loggers(with_wandb)
    read = reads | {(id(cfg), key) for root, key in reads if root == id(with_wandb)}
    assert unread_keys(cfg, read, skip={"hydra"}) == []
    for node, keys in TRAIN_READS.items():
        assert {f"{node}.{k}" for k in keys} <= {key for root, key in read if root == id(cfg)}


# --- benchmark ----------------------------------------------------------------------------


def bench_model(name: str, tmp_path: Path) -> DictConfig:
    """conf/bench/model/<name>.yaml composed; tiny models build under tmp_path, custom names the
    signal-statistics baseline."""
    over = [f"checkpoint={tmp_path / name}"] if name.endswith("_tiny") else []
    if name == "custom":
        over.append("class_path=bench.baselines:SignalStatsReward")
    return compose_model_config(name, over)


@pytest.mark.parametrize("model", BENCH_MODELS)
def test_bench_model_composes(model):
    with initialize_config_dir(config_dir=str(BENCH_CONF), version_base="1.3"):
        cfg = compose("bench", overrides=[f"model={model}"])
    assert cfg.model.name and {"_target_", "class_path"} & set(cfg.model.keys())


@pytest.mark.parametrize("model", sorted(set(BENCH_MODELS) - NEEDS_WEIGHTS))
def test_bench_model_builds_offline(model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    built, score_kwargs = build_reward_model(bench_model(model, tmp_path))
    assert isinstance(built, RewardModel) and isinstance(score_kwargs, dict)


@pytest.mark.parametrize("model", sorted(NEEDS_WEIGHTS))
def test_bench_model_without_its_weights_names_what_to_fetch(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing under ckpts/ or outputs/ here
    for env in ("CMI_RM_CHECKPOINT", "SONGEVAL_CHECKPOINT", "AUDIOSCORE_CHECKPOINT"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as info:
        build_reward_model(bench_model(model, tmp_path))
    message = str(info.value)
    assert "\n" not in message and "model.checkpoint=" in message


@pytest.mark.parametrize("model", BENCH_MODELS)
def test_bench_model_keys_bind_to_the_constructor(model, tmp_path):
    """Keys of a `_target_` model are used constructor parameters; `custom`'s init_kwargs go to
    its class; `score_kwargs` to score_batch; the runner's own keys are rewards.build.RESERVED."""
    cfg = bench_model(model, tmp_path)
    if "_target_" in cfg:
        assert unbound_target_keys(cfg, {"": set(RESERVED)}) == []
    else:
        assert set(cfg) <= {*RESERVED, "class_path", "init_kwargs", "checkpoint", "device"}
    if cfg.score_kwargs and model not in NEEDS_WEIGHTS:
        built = build_reward_model(cfg)[0]
        assert unbound_kwargs(cfg.score_kwargs, built.score_batch, "score_kwargs") == []


class SettingsProbe(SignalStatsReward):
    """The baseline with every key the runner pushes into a model config that has it."""

    def __init__(self, cache_dir=None, bf16=True, upstream_compat=False, **kw):
        super().__init__(**kw)
        self.pushed = (cache_dir, bf16, upstream_compat)


def compose_bench(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(BENCH_CONF), version_base="1.3"):
        return compose("bench", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture(scope="module")
def bench_reads(tmp_path_factory):
    """(composed config, reads) of one `python -m bench.run` on a toy dataset, in process."""
    from bench.run import main

    root = tmp_path_factory.mktemp("bindbench")
    make_toy_bench(root, corrupt=False, missing=False)
    cfg = compose_bench(
        "model=signal_stats",
        f"model._target_={__name__}.SettingsProbe",
        "+model.cache_dir=null",
        "+model.bf16=true",
        "+model.upstream_compat=false",
        f"dataset.jsonl={root / 'bench.jsonl'}",
        f"dataset.root={root}",
        f"output_root={root / 'out'}",
        "num_workers=0",
        "n_boot=10",
        "plots=false",
    )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # the task sees the job's config, as under hydra.main
        del cfg["hydra"]
    try:
        with track_reads() as reads:
            assert main(cfg) == 0  # hydra.main passes a given config straight to the task
    finally:
        gc.unfreeze()  # main() freezes the GC for the interpreter's exit
        HydraConfig.instance().cfg = None
    return cfg, reads


def test_bench_run_reads_every_setting(bench_reads):
    """Every option of bench.yaml and every dataset key is read by a run; `trainer` goes to
    lightning.Trainer(**trainer) (sharded runs), so its keys are its parameters."""
    cfg, reads = bench_reads
    unread = unread_keys(cfg, reads, skip={"hydra", "model", "trainer"})
    assert unread == []
    assert unbound_kwargs(cfg.trainer, L.Trainer, "trainer") == []


@pytest.mark.parametrize(
    "choice",
    [f"{g}={p.stem}" for g in ("dataset", "preset") for p in (BENCH_CONF / g).glob("*.yaml")],
)
def test_bench_dataset_and_preset_keys_are_read(choice, bench_reads):
    """A dataset or preset names only keys the run reads (a preset is global: runner options)."""
    base, reads = bench_reads
    seen = {key for root, key in reads if root == id(base)}
    cfg = compose_bench(choice)
    group = choice.split("=")[0]
    keys = {f"dataset.{k}" for k in cfg.dataset} if group == "dataset" else set()
    if group == "preset":
        keys = set(OmegaConf.load(BENCH_CONF / "preset" / f"{choice.split('=')[1]}.yaml"))
    assert keys and keys <= seen, sorted(keys - seen)


# --- the timbre experiment's grid (conf/timbre/timbre.yaml) ---------------------------------


def test_timbre_grid_keys_are_read(tmp_path, monkeypatch):
    """`corpus` and `campp.pretrain` go to make_corpus / pretrain_campp as keyword arguments;
    every other key is read while the grid's corpora, CAM++ weights and every cell's training
    config are prepared (corpus rendering and pretraining faked). `probe` is read by
    evaluate_cell on trained weights (the slow micro-grid tests run it)."""
    from audioscore.studies import timbre_experiment as te
    from audioscore.studies.campp_speaker import pretrain_campp
    from audioscore.synth import make_corpus

    old_cells = tmp_path / "old_cells.csv"  # a finished grid to take plan A cells from
    te.write_cells(old_cells, [])
    grid = te.load_grid(["campp.kind=pretrained", f"reuse_cells={old_cells}"])
    assert unbound_kwargs(grid.corpus, make_corpus, "corpus") == []
    assert unbound_kwargs(grid.campp.pretrain, pretrain_campp, "campp.pretrain") == []

    def fake_pretrain(path, **settings):
        path.write_bytes(b"w")
        return {"loss": 1.0, "acc": 0.5}

    monkeypatch.setattr(te, "make_corpus", lambda root, **kw: Path(root).mkdir(parents=True))
    monkeypatch.setattr(te, "pretrain_campp", fake_pretrain)
    with track_reads() as reads:
        corpora = te.make_corpora(grid, tmp_path / "out")
        weights = te.campp_weights(grid, tmp_path / "out")
        assert te.reuse_cells(grid, []) == []
        for exp in grid.experiments:
            te.compose_cell(grid, corpora["control"]["root"], str(exp), 0, tmp_path / "r", weights)
    assert unread_keys(grid, reads, skip={"corpus", "campp.pretrain", "probe"}) == []


# --- the checker itself -------------------------------------------------------------------


def test_check_names_a_planted_unread_bench_option(tmp_path, bench_reads):
    """A key added to a copy of bench.yaml that no code reads is named by the settings check."""
    _, reads = bench_reads
    conf = tmp_path / "bench"
    shutil.copytree(BENCH_CONF, conf)
    text = (conf / "bench.yaml").read_text().replace("seed: 0", "seed: 0\nboot_seed: 1", 1)
    (conf / "bench.yaml").write_text(text)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        planted = compose("bench", overrides=["model=signal_stats"])
    # the run's reads, keyed to the planted config: everything the real run read is read here
    same = {(id(planted), key) for _, key in reads}
    assert unread_keys(planted, same, skip={"hydra", "model", "trainer"}) == ["boot_seed"]


def test_check_names_a_planted_model_key_the_constructor_lacks(tmp_path):
    path = tmp_path / "pitch_planted.yaml"
    path.write_text((BENCH_CONF / "model" / "pitch.yaml").read_text() + "hop_length: 512\n")
    (problem,) = unbound_target_keys(compose_model_config(str(path)), {"": set(RESERVED)})
    assert problem.startswith("hop_length: not a parameter of PitchRewardModel")


class Ignores:
    def __init__(self, used: int, ignored: int = 0, **rest):
        self.used = used
        self.rest = rest


class Forwards:
    def __init__(self, **kwargs):
        self.inner = Ignores(**kwargs)


def test_check_names_a_parameter_the_body_never_uses(monkeypatch):
    monkeypatch.setattr("helpers.binding.OWN", (__name__.split(".")[0],))
    cfg = OmegaConf.create({"_target_": f"{__name__}.Ignores", "used": 1, "ignored": 2})
    assert unbound_target_keys(cfg) == [
        "ignored: a parameter of Ignores.__init__ that its body never uses"
    ]


def test_check_follows_kwargs_to_the_callable_they_are_passed_to(monkeypatch):
    monkeypatch.setattr("helpers.binding.OWN", (__name__.split(".")[0],))
    cfg = OmegaConf.create({"_target_": f"{__name__}.Forwards", "used": 1, "other": 2})
    (problem,) = unbound_target_keys(cfg)
    assert problem.startswith("other: forwarded by") and "Forwards" in problem
