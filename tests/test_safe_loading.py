"""Stored configs may only name the project's components: crafted exports are refused before
anything is built, through every loader; real exports of every model config still load."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.routes import make_tiny_export, write_clips
from helpers.train import compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf

import audiobase.muq as audiobase_muq
from audioscore.export import ExportError, export_scorer, load_scorer, read_export_config
from audioscore.safe_config import (
    COMPONENT_MARK,
    SAFE_RESOLVERS,
    StoredConfigError,
    UnsafeTargetError,
    check_targets,
    interpolation_refusal,
    iter_targets,
    resolve_stored,
)
from audioscore.training.init_from import load_init_weights
from rewards.build import BENCH_CONF_DIR, MODEL_CONF_DIR, build_reward_model, compose_model_config
from rewards.server import load_model

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return make_tiny_export(tmp_path_factory.mktemp("safe"))


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("keep me")
    return path


def craft(export: Path, out: Path, edit) -> Path:
    """A copy of `export` whose config.yaml went through `edit(config)`."""
    shutil.copytree(export, out)
    config = yaml.safe_load((out / "config.yaml").read_text())
    edit(config)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return out


def open_for_writing(victim: Path):
    def edit(config):
        config["net"] = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}

    return edit


def test_open_for_writing_is_refused_by_every_loader(export, victim, tmp_path):
    bad = craft(export, tmp_path / "bad", open_for_writing(victim))
    loaders = {
        "load_scorer": lambda: load_scorer(bad),
        "read_export_config": lambda: read_export_config(bad),
        "model=audioscore": lambda: build_reward_model(
            {
                "name": "audioscore",
                "_target_": "rewards.audioscore_rm.AudioscoreRewardModel",
                "checkpoint": str(bad),
            }
        ),  # fmt: skip
        "init_from": lambda: load_init_weights(torch.nn.Linear(2, 2), str(bad)),
    }
    for name, load in loaders.items():
        with pytest.raises(ExportError, match=r"net\._target_ = 'builtins\.open'") as err:
            load()
        assert "config.yaml" in str(err.value), name
        assert victim.read_text() == "keep me", name


def test_score_cli_refuses_with_exit_status_2(export, victim, tmp_path):
    bad = craft(export, tmp_path / "bad", open_for_writing(victim))
    clip = write_clips(tmp_path, [("a.wav", 0.5, 24_000)])[0]
    out = subprocess.run(
        [sys.executable, "-m", "audioscore.score", str(bad), str(clip)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert "cannot load scorer" in out.stderr and "net._target_ = 'builtins.open'" in out.stderr
    assert out.stdout == "" and victim.read_text() == "keep me"


@pytest.mark.parametrize(
    ("where", "target", "reason"),
    [
        ("encoder", "shutil.rmtree", "outside the component packages"),
        ("list", "os.remove", "outside the component packages"),
        ("meta", "os.system", "outside the component packages"),
        ("encoder", "audiobase.muq.build_tiny_muq_dir", "not marked"),
        ("encoder", "audiobase.files.write_text", "not marked"),
        ("encoder", "audiobase.muq.os.remove", "is the module 'os'"),
        ("encoder", "audiobase.cache.FeatureCache", "neither an nn.Module nor a dataclass"),
        ("encoder", "audioscore.models.components.nothing_here.X", "does not resolve"),
    ],
)
def test_nested_targets_are_refused_naming_the_key(export, tmp_path, where, target, reason):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "f.txt").write_text("x")
    planted = tmp_path / "planted"
    args = {"path": str(keep / "f.txt") if "remove" in target else str(planted)}

    def edit(config):
        node = {"_target_": target, **args}
        if where == "encoder":
            config["net"]["encoder"] = node
        elif where == "list":
            config["net"]["head"]["blocks"] = [{"dim": 2}, node]
        else:
            config["meta"] = {"hook": node}

    bad = craft(export, tmp_path / "bad", edit)
    key = {"encoder": "net.encoder", "list": "net.head.blocks[1]", "meta": "meta.hook"}[where]
    with pytest.raises(
        ExportError, match=re.escape(f"{key}._target_ = '{target}': ") + ".*" + re.escape(reason)
    ):
        load_scorer(bad)
    assert (keep / "f.txt").read_text() == "x" and not planted.exists()


def test_real_tiny_export_loads_and_scores(export, tmp_path):
    config = read_export_config(export)
    assert [k for k, _ in iter_targets(config)] == [
        "net._target_",
        "net.encoder._target_",
        "net.head._target_",
    ]
    clips = write_clips(tmp_path)
    scores = load_scorer(export).score([str(p) for p in clips])
    assert scores.shape == (len(clips),) and torch.isfinite(torch.from_numpy(scores)).all()


def test_an_export_naming_the_heads_old_module_scores_the_same(export, tmp_path):
    # exports written before the head moved to audiobase name it under audioscore.models
    def edit(config):
        assert config["net"]["head"]["_target_"] == "audiobase.songeval_head.SongEvalHead"
        config["net"]["head"]["_target_"] = "audioscore.models.components.head.SongEvalHead"

    old = craft(export, tmp_path / "old", edit)
    clips = [str(p) for p in write_clips(tmp_path)]
    assert (load_scorer(old).score(clips) == load_scorer(export).score(clips)).all()


@pytest.mark.parametrize(
    "model", sorted(p.stem for p in (ROOT / "conf/train/model").glob("*.yaml"))
)
def test_every_model_config_exports_loadable(model, tmp_path):
    """The rule names no component: whatever a model config builds exports a config that passes."""
    cfg = compose_train(f"model={model}", "debug=tiny", f"paths.data_dir={tmp_path}")
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    torch.manual_seed(0)
    net = instantiate(net_cfg, _convert_="all").eval()
    out = export_scorer(net, tmp_path / "export", net_config=net_cfg)
    check_targets(read_export_config(out), "export")
    assert load_scorer(out).score([torch.zeros(24_000) + 0.01]).shape == (1,)


def test_marked_factories_pass_and_unmarked_ones_do_not(monkeypatch):
    cfg = {"net": {"_target_": "audiobase.muq.tiny_muq_config"}}
    with pytest.raises(UnsafeTargetError, match="not marked @component") as err:
        check_targets(cfg, "x.yaml")
    assert err.value.key == "net._target_" and err.value.where == "x.yaml"
    monkeypatch.setattr(audiobase_muq.tiny_muq_config, COMPONENT_MARK, True, raising=False)
    check_targets(cfg, "x.yaml")
    check_targets(OmegaConf.create(cfg), "x.yaml")  # OmegaConf configs too
    check_targets({"preprocess": {"_target_": "audiobase.preprocess.Preprocess", "sr": 1}}, "x")
    with pytest.raises(UnsafeTargetError, match="not a dotted name"):
        check_targets({"a": [{"_target_": 3}]}, "x.yaml")


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (ROOT / "conf/train/experiment").glob("*.yaml"))
)
def test_every_run_config_passes_the_check(experiment, tmp_path):
    """Run configs are read back from disk (`audioscore.studies.probe` rebuilds a net from
    `<run>/.hydra/config.yaml`, saved unresolved), so what every experiment saves must pass
    the same rule, resolved once with the harmless resolvers only."""
    cfg = compose_train(f"experiment={experiment}", "debug=tiny", f"paths.data_dir={tmp_path}")
    saved = yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=False))
    stored = resolve_stored(saved, "config.yaml", ("model.net", "data.preprocess"))
    assert stored["model.net"] == OmegaConf.to_container(cfg.model.net, resolve=True)
    assert stored["data.preprocess"] == OmegaConf.to_container(cfg.data.preprocess, resolve=True)


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("${paths.data_dir}/x", None),
        ("${oc.env:HOME,/tmp}", None),
        ("${now:%Y}", None),
        ("${oc.select:a.b,${c}}", None),
        ("plain text", None),
        ("${oc.create:{a: 1}}", "calls the resolver 'oc.create'"),
        ("${oc.decode:'[1]'}", "calls the resolver 'oc.decode'"),
        ("x ${oc.env:A,${oc.create:{}}}", "calls the resolver 'oc.create'"),
        ("${oc.${name}:x}", "a resolver whose name is computed"),
        ("${my_registered_resolver:1}", "calls the resolver 'my_registered_resolver'"),
        ("${oc.env:A", "not a valid interpolation"),
    ],
)
def test_resolvers_outside_the_named_set_are_refused(text, refused):
    reason = interpolation_refusal(text, SAFE_RESOLVERS)
    assert (reason is None) if refused is None else (refused in (reason or ""))
    # an export is stored resolved: there, any interpolation at all is refused
    assert (interpolation_refusal(text, None) is None) == ("${" not in text)


def test_escaped_or_planted_interpolations_are_refused_in_a_resolved_tree():
    """A resolved tree (what Hydra then builds) may hold `${` nowhere: Hydra resolves it again."""
    for tree, key in [
        ({"net": {"a": "\\${oc.env:HOME}"}}, "net.a"),
        ({"net": {"l": [1, ["${x}"]]}}, "net.l[1][0]"),
        ({"net": {"${x}": 1}}, "key net.${x}"),
    ]:
        with pytest.raises(StoredConfigError, match=re.escape(f"x.yaml: refusing {key}: holds")):
            check_targets(tree, "x.yaml")
    check_targets({"net": {"a": "$ {not} an interpolation", "b": "$HOME"}}, "x.yaml")


@pytest.mark.parametrize("model", sorted(p.stem for p in MODEL_CONF_DIR.glob("*.yaml")))
def test_every_bench_model_config_composes_as_bench_run_composes_it(model):
    """rewards.serve and bench.run compose a model config the same way (defaults lists too)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(BENCH_CONF_DIR), version_base="1.3"):
        bench = compose("bench", overrides=[f"model={model}"]).model
    cfg = compose_model_config(model)
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(bench)
    assert {"_target_", "class_path"} & set(cfg.keys())
    assert "defaults" not in cfg


def test_serve_loads_audioscore_plan_b_through_its_defaults_list(export):
    """`rewards.serve --model audioscore_plan_b`: the yaml only names its parent in `defaults:`
    (reading it with OmegaConf.load gave "needs `_target_` or `class_path`")."""
    cfg = compose_model_config("audioscore_plan_b", [f"checkpoint={export}"])
    assert cfg.name == "audioscore_plan_b" and cfg._target_.endswith("AudioscoreRewardModel")
    model = load_model("audioscore_plan_b", [f"checkpoint={export}"])
    assert model.scorer.path == str(export)


def test_a_model_yaml_path_composes_with_project_defaults(tmp_path, export):
    own = tmp_path / "mine.yaml"
    own.write_text(f"defaults:\n  - audioscore\n  - _self_\nname: mine\ncheckpoint: {export}\n")
    cfg = compose_model_config(str(own), ["device=cpu"])
    assert cfg.name == "mine" and cfg.checkpoint == str(export) and cfg.calibrated is True
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: evil\n_target_: '${oc.create:{a: 1}}'\n")
    with pytest.raises(
        StoredConfigError, match=r"evil\.yaml: refusing _target_: calls the resolver"
    ):
        compose_model_config(str(evil))
    with pytest.raises(StoredConfigError, match="no such model config"):
        compose_model_config("../../secrets")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(
        StoredConfigError, match=r"broken\.yaml: refusing the file: cannot be composed"
    ):
        compose_model_config(str(broken))


def test_crafted_run_config_is_refused_by_the_probe(victim, tmp_path):
    from audioscore.studies.probe import export_checkpoint

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    config = {
        "model": {"net": {"_target_": "builtins.open", "file": str(victim), "mode": "w"}},
        "data": {"preprocess": {"_target_": "audiobase.preprocess.Preprocess", "sr": 24000}},
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UnsafeTargetError, match=r"model\.net\._target_ = 'builtins.open'"):
        export_checkpoint(ckpt)
    assert victim.read_text() == "keep me"
