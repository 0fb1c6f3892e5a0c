"""A user's own model classes, living outside the package (docs/custom.md): an encoder trained
through `audioscore.train` and a reward model run by `bench.run`, each found on PYTHONPATH and
selected by a yaml in the user's own config folder (`hydra.searchpath`); exports naming the
user's classes load once the user names their package, and only what they marked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.train import FAST, compose_train

from audiobase.weights import UserError
from audioscore.export import ExportError, Scorer, read_export_config
from audioscore.safe_config import (
    USER_PACKAGES_ENV,
    UnsafeTargetError,
    check_targets,
    component_packages,
)

PACKAGE = "byo_models"  # the user's package (a name no other test imports)

FRAMES = '''
"""A user's encoder: 20 ms frames through a small MLP (the Encoder protocol)."""

import torch
from torch import nn

from audioscore.safe_config import component


@component  # exports naming this class load where AUDIOSCORE_COMPONENT_PACKAGES names this package
class FrameEncoder(nn.Module):
    uses_keys = False

    def __init__(self, hop: int = 480, out_dim: int = 16) -> None:
        super().__init__()
        self.hop, self.out_dim = hop, out_dim
        self.proj = nn.Sequential(nn.Linear(hop, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, wav, lengths=None, keys=None):
        n = wav.shape[1] // self.hop
        frames = wav[:, : n * self.hop].reshape(wav.shape[0], n, self.hop)  # [B, F, hop]
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], device=wav.device)
        mask = torch.arange(n, device=wav.device)[None] < (lengths[:, None] // self.hop)
        return self.proj(frames), mask  # [B, F, out_dim], [B, F]
'''

LOUDNESS = '''
"""A user's reward model: CMI-RewardBench's contract (`sr`, `score_batch` -> [N, 2])."""

import numpy as np


class Loudness:
    """Column 0 (text alignment): `gain`; column 1 (musicality): RMS level in dB."""

    def __init__(self, gain=1.0, sr=24000, checkpoint=None, device="cpu"):
        self.gain, self.sr = gain, sr

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        rows = []
        for x in inputs:
            wav = np.asarray(x.audio, dtype=np.float64)
            rows.append([self.gain, 20 * np.log10(np.sqrt(np.mean(wav**2)) + 1e-9)])
        return np.asarray(rows)
'''

PARTS = '''
"""Classes and functions a stored config might name: marked, unmarked, inherited."""

from torch import nn

from audioscore.safe_config import component


@component
class Marked(nn.Module):
    pass


class Unmarked(nn.Module):
    pass


class InheritsMark(Marked):
    pass


@component
def marked_factory(width: int = 2) -> nn.Module:
    return nn.Linear(width, 1)


def write_file(path: str) -> None:
    open(path, "w").close()
'''

ENCODER_YAML = f"""
_target_: {PACKAGE}.frames.FrameEncoder
hop: 480
out_dim: 16
"""

HEADS = '''
"""A user's head: masked mean of projected frames (+ clip features) -> one score."""

import torch
from torch import nn

from audioscore.safe_config import component


@component
class MeanHead(nn.Module):
    """What VocalScorer and the training module use of a head: pool, project, pooled_dim,
    extra_dim (and `fc`, the projection, with a GRL adversary)."""

    def __init__(self, in_dim: int, extra_dim: int = 0, hidden_dim: int = 8) -> None:
        super().__init__()
        self.ffd = nn.Linear(in_dim, hidden_dim)
        self.extra_dim, self.pooled_dim = extra_dim, hidden_dim + extra_dim
        self.fc = nn.Linear(self.pooled_dim, 1)

    def pool(self, feats, mask, extra=None):
        m = mask.unsqueeze(-1).to(feats.dtype)  # [B, F, 1]
        pooled = (self.ffd(feats) * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B, H]
        return pooled if extra is None else torch.cat([pooled, extra], dim=-1)

    def project(self, pooled):
        return self.fc(pooled).squeeze(-1)  # [B]
'''

MODEL_TRAIN_YAML = f"""
# the project's training module around the user's encoder and head
defaults:
  - /encoder@net.encoder: frames
  - _self_

_target_: audioscore.models.scorer_module.ScorerLitModule
_convert_: all
save_full_encoder: ${{save_full_encoder}}
loss: ${{loss}}
net:
  _target_: audioscore.models.components.scorer.VocalScorer
  head:
    _target_: {PACKAGE}.heads.MeanHead
    _partial_: true
    hidden_dim: 8
optimizer:
  _target_: torch.optim.AdamW
  _partial_: true
  lr: 1.0e-3
"""

EXPERIMENT_YAML = """
# @package _global_
defaults:
  - override /model: my_scorer
  - override /data: synth
  - override /trainer: cpu

experiment_name: my_frames
"""

MODEL_YAML = f"""
# reward model (python -m bench.run)
defaults:
  - custom
  - _self_
name: my_loudness
class_path: {PACKAGE}.loudness:Loudness
init_kwargs: {{gain: 0.5}}
"""


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """The user's folder: the package `byo_models` and the config folders my_conf/{train,bench}."""
    root = tmp_path_factory.mktemp("user")
    files = {
        f"{PACKAGE}/__init__.py": "",
        f"{PACKAGE}/frames.py": FRAMES,
        f"{PACKAGE}/heads.py": HEADS,
        f"{PACKAGE}/loudness.py": LOUDNESS,
        f"{PACKAGE}/parts.py": PARTS,
        f"{PACKAGE}/unnamed.py": "import torch\n\nclass Net(torch.nn.Module):\n    pass\n",
        "my_conf/train/encoder/frames.yaml": ENCODER_YAML,
        "my_conf/train/model/my_scorer.yaml": MODEL_TRAIN_YAML,
        "my_conf/train/experiment/my_frames.yaml": EXPERIMENT_YAML,
        "my_conf/bench/model/my_loudness.yaml": MODEL_YAML,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture
def on_path(user_dir, monkeypatch):
    """This process imports the user's package as the CLIs do (PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(user_dir))
    monkeypatch.delenv(USER_PACKAGES_ENV, raising=False)


def user_env(user_dir: Path) -> dict[str, str]:
    """The CLIs' environment: the user's folder on PYTHONPATH before the project's."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(user_dir), env.get("PYTHONPATH", "")])
    env.pop(USER_PACKAGES_ENV, None)
    return env


@pytest.fixture(scope="module")
def trained(user_dir, synth_corpus, tmp_path_factory) -> Path:
    """`python -m audioscore.train hydra.searchpath=[file://<user>/my_conf/train]
    experiment=my_frames` (the user's experiment selects the user's encoder); the run dir."""
    run_dir = tmp_path_factory.mktemp("byo_run")
    search = f"hydra.searchpath=[file://{user_dir / 'my_conf' / 'train'}]"
    fast = [o for o in FAST if not o.startswith("debug=")]  # debug=tiny shrinks MuQ's keys
    cmd = [sys.executable, "-m", "audioscore.train", search, "experiment=my_frames", *fast]
    cmd += [f"data.root={synth_corpus['root']}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, env=user_env(user_dir), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_user_encoder_yaml_replaces_the_encoder_by_command_line(user_dir):
    """`encoder@model.net.encoder=frames` with the user's folder on the search path: the
    user's encoder in the project's model, the project's head kept."""
    search = f"hydra.searchpath=[file://{user_dir / 'my_conf' / 'train'}]"
    cfg = compose_train(search, "encoder@model.net.encoder=frames")
    assert cfg.model.net.encoder == {
        "_target_": f"{PACKAGE}.frames.FrameEncoder",
        "hop": 480,
        "out_dim": 16,
    }
    assert cfg.model.net.head._target_ == "audiobase.songeval_head.SongEvalHead"


def test_user_encoder_and_head_from_own_config_folder_train_and_export(trained):
    """The run was built from the user's yamls: its encoder and head are the user's classes,
    with the yamls' settings, in the run's config and in the export."""
    export = yaml.safe_load((trained / "export" / "config.yaml").read_text())  # unchecked
    assert export["net"]["encoder"] == {
        "_target_": f"{PACKAGE}.frames.FrameEncoder",
        "hop": 480,
        "out_dim": 16,
    }
    assert export["net"]["head"] == {
        "_target_": f"{PACKAGE}.heads.MeanHead",
        "_partial_": True,
        "hidden_dim": 8,
    }
    assert list((trained / "checkpoints").glob("epoch_*.ckpt"))
    assert "byo_models.frames.FrameEncoder" in (trained / ".hydra" / "config.yaml").read_text()


def test_user_export_is_refused_until_its_package_is_named(trained, on_path):
    """Without AUDIOSCORE_COMPONENT_PACKAGES the export's `_target_` is outside the allowlist:
    refused, naming the variable to set."""
    with pytest.raises(ExportError, match=f"name its package in \\${USER_PACKAGES_ENV}"):
        read_export_config(trained / "export")


def test_user_export_scores_with_its_package_named(trained, on_path, monkeypatch, synth_corpus):
    """With the user's package named, the export loads the user's class and scores clips."""
    monkeypatch.setenv(USER_PACKAGES_ENV, PACKAGE)
    scorer = Scorer(trained / "export")
    assert type(scorer.net.encoder).__module__ == f"{PACKAGE}.frames"
    assert type(scorer.net.head).__module__ == f"{PACKAGE}.heads"
    clips = sorted(Path(synth_corpus["root"], "audio").rglob("*.wav"))[:3]
    scores = scorer.score([str(p) for p in clips])
    assert scores.shape == (3,) and np.isfinite(scores).all()


def test_bench_runs_user_reward_model_from_own_config_folder(user_dir, synth_corpus, tmp_path):
    """`python -m bench.run hydra.searchpath=[file://<user>/my_conf/bench] model=my_loudness`:
    the user's yaml names the class and its constructor arguments."""
    search = f"hydra.searchpath=[file://{user_dir / 'my_conf' / 'bench'}]"
    root = synth_corpus["root"]
    cmd = [sys.executable, "-m", "bench.run", search, "model=my_loudness"]
    cmd += [f"dataset.jsonl={root / 'bench.jsonl'}", f"dataset.root={root}"]
    cmd += [f"output_root={tmp_path}", "n_boot=0", "plots=false", "num_workers=0"]
    proc = subprocess.run(cmd, env=user_env(user_dir), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "my_loudness" / "synth"
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["failed"] == 0 and stats["run"]["scored_rows"] > 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["bench_model"] for r in rows} == {"my_loudness"}
    assert {r["predicted_text-music alignment"] for r in rows} == {0.5}  # gain from the yaml
    assert all(np.isfinite(r["predicted_musicality"]) for r in rows)


def target(name: str) -> dict:
    return {"net": {"_target_": f"{PACKAGE}.{name}"}}


def test_named_package_allows_what_its_author_marked(on_path, monkeypatch):
    monkeypatch.setenv(USER_PACKAGES_ENV, f" {PACKAGE} ,other_pkg")
    check_targets(target("parts.Marked"), "x.yaml")
    check_targets(target("parts.marked_factory"), "x.yaml")


@pytest.mark.parametrize(
    "name", ["parts.Unmarked", "parts.InheritsMark", "parts.write_file", "parts.nn"]
)
def test_named_package_refuses_what_its_author_did_not_mark(on_path, monkeypatch, name):
    """An unmarked class, a subclass of a marked class, a file-writing function, a module:
    naming the package opens only the marked names in it."""
    monkeypatch.setenv(USER_PACKAGES_ENV, PACKAGE)
    with pytest.raises(UnsafeTargetError, match="refusing net._target_"):
        check_targets(target(name), "x.yaml")


def test_unnamed_package_is_refused_without_being_imported(on_path):
    """A stored config naming a user's module outside the named packages imports nothing."""
    assert f"{PACKAGE}.unnamed" not in sys.modules
    with pytest.raises(UnsafeTargetError, match=f"name its package in \\${USER_PACKAGES_ENV}"):
        check_targets(target("unnamed.Net"), "x.yaml")
    assert f"{PACKAGE}.unnamed" not in sys.modules


def test_naming_a_standard_library_package_opens_nothing(monkeypatch):
    """AUDIOSCORE_COMPONENT_PACKAGES=os,builtins: nothing there carries the mark."""
    monkeypatch.setenv(USER_PACKAGES_ENV, "os,builtins,shutil")
    for name in ("os.system", "builtins.open", "shutil.rmtree", "os.PathLike"):
        with pytest.raises(UnsafeTargetError, match=f"refusing _target_ = '{name}'"):
            check_targets({"_target_": name}, "x.yaml")


def test_malformed_package_list_is_refused_naming_the_variable(monkeypatch):
    """A malformed value is refused as the config's refusal (exit 2 in the CLIs), not ignored."""
    monkeypatch.setenv(USER_PACKAGES_ENV, "my_models,my-models")
    with pytest.raises(UnsafeTargetError, match=f"refusing \\${USER_PACKAGES_ENV} = .*'my-models'"):
        check_targets({"_target_": "audiobase.preprocess.Preprocess"}, "x.yaml")
    with pytest.raises(UserError, match="'my-models' is not a dotted package name"):
        component_packages()
