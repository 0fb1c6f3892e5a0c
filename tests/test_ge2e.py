"""GE2E voice encoder (Resemblyzer's packaged weights) as plan B's timbre branch: parity with
Resemblyzer, exact batching, the missing package, bad weight files, training and export."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.train import FAST, compose_train
from omegaconf import OmegaConf, open_dict

import audioscore.studies.timbre_experiment as te
from audiobase.weights import MissingPackageError
from audioscore.models.components.ge2e import (
    INSTALL,
    Ge2eEncoder,
    Ge2eLoadError,
    package_weights,
)
from audioscore.train import train
from rewards.audioscore_rm import AudioscoreRewardModel


def voice(seconds: float, sr: int, f0: float, seed: int = 0, gaps: bool = True) -> np.ndarray:
    """A harmonic tone with vibrato, breath noise and (optionally) pauses of ~0.4 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * f0 * (t + 0.01 / (2 * np.pi * 5) * np.sin(2 * np.pi * 5 * t))
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = (np.sin(2 * np.pi * 0.7 * t) > -0.5).astype(float) if gaps else 1.0
    return (0.1 * x * env + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def padded(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in clips])
    wav = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        wav[i, : len(c)] = torch.from_numpy(c)
    return wav, lengths


@pytest.fixture(scope="module")
def ge2e16() -> Ge2eEncoder:
    return Ge2eEncoder("resemblyzer", in_sr=16_000)


def test_embedding_equals_resemblyzer_on_its_preprocessed_wav(ge2e16):
    """VoiceEncoder().embed_utterance(preprocess_wav(...)) within 1e-5, for a clip shorter than
    one partial and one of several partials, embedded together in one padded batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resemblyzer imports scipy.ndimage.morphology
        from resemblyzer import VoiceEncoder, preprocess_wav

    ref_encoder = VoiceEncoder(device="cpu", verbose=False)
    clips = [
        preprocess_wav(voice(s, 16_000, f0), source_sr=16_000) for s, f0 in [(0.8, 150), (3.3, 240)]
    ]
    want = np.stack([ref_encoder.embed_utterance(c) for c in clips])
    got = ge2e16(*padded(clips)).numpy()
    assert got.shape == (2, 256)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_batched_embedding_equals_each_clip_alone_at_24k():
    enc = Ge2eEncoder("resemblyzer", in_sr=24_000)
    clips = [
        voice(s, 24_000, f0, seed=i)
        for i, (s, f0) in enumerate([(2.9, 200), (0.6, 120), (1.7, 330)])
    ]
    batched = enc(*padded(clips))
    alone = torch.cat([enc(*padded([c])) for c in clips])
    torch.testing.assert_close(batched, alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(3))


def test_quiet_clips_are_raised_to_the_same_level(ge2e16):
    """normalize_volume: two clips below -30 dBFS, one 20 dB quieter, embed alike; without it,
    not."""
    x = voice(1.5, 16_000, 180, gaps=False)
    both = padded([0.1 * x, 0.01 * x])  # about -40 and -60 dBFS
    emb = ge2e16(*both)
    torch.testing.assert_close(emb[0], emb[1], atol=1e-5, rtol=0)
    raw = Ge2eEncoder("resemblyzer", in_sr=16_000, normalize_volume=False)(*both)
    assert (raw[0] - raw[1]).abs().max() > 1e-3


def test_weights_are_read_from_the_installed_package_without_importing_it():
    code = (
        "import sys; from audioscore.models.components.ge2e import Ge2eEncoder; "
        "Ge2eEncoder(); print('resemblyzer' in sys.modules, 'webrtcvad' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert package_weights().name == "pretrained.pt"


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # find_spec -> None: not installed
    with pytest.raises(MissingPackageError) as e:
        Ge2eEncoder()
    assert INSTALL in str(e.value) and "\n" not in str(e.value)


def test_train_cli_without_the_package_exits_2_with_one_line(tmp_path):
    code = (
        "import runpy, sys; sys.modules['resemblyzer'] = None; out = sys.argv[1]; "
        "sys.argv = ['train', 'experiment=hybrid_campp', 'debug=tiny', 'logger=csv', "
        "'campp@model.net.timbre=ge2e', 'hydra.run.dir=' + out, 'paths.data_dir=' + out]; "
        "runpy.run_module('audioscore.train', run_name='__main__')"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"},
    ) as proc:
        _, err = proc.communicate()
    assert proc.returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and INSTALL in lines[0] and "Traceback" not in err


def test_a_weights_file_that_is_not_ge2e_is_refused_by_name(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"model_state": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(Ge2eLoadError, match="other.pt: missing GE2E tensors"):
        Ge2eEncoder(str(other))
    with pytest.raises(Ge2eLoadError, match="no such file"):
        Ge2eEncoder(str(tmp_path / "absent.pt"))


@pytest.mark.parametrize(
    "bad", [{"rate": 0.0}, {"rate": 0.5}, {"rate": 200.0}, {"min_coverage": 0.0}, {"max_s": -1.0}]
)
def test_front_end_settings_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match="GE2E"):
        Ge2eEncoder(None, **bad)


def test_an_empty_clip_is_refused(ge2e16):
    with pytest.raises(ValueError, match="empty clip"):
        ge2e16(torch.zeros(2, 800), torch.tensor([800, 0]))


def test_a_weights_file_with_pickled_code_is_refused_not_run(tmp_path):
    """Attack: a checkpoint whose pickle calls a function on load (weights_only refuses it)."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"model_state": Payload()}, evil)
    with pytest.raises(Ge2eLoadError, match="evil.pt: cannot read weights"):
        Ge2eEncoder(str(evil))
    assert not marker.exists()


def test_plan_b_with_ge2e_trains_and_its_export_scores_without_the_package(
    tmp_path, synth_corpus, monkeypatch
):
    """experiment=hybrid_campp campp@model.net.timbre=ge2e debug=tiny, two steps: GE2E is the
    frozen timbre branch (real weights even under debug=tiny), the head gets its 256 dims, the
    weights are unchanged by training, and the export carries them."""
    cfg = compose_train(
        "experiment=hybrid_campp",
        f"data.root={synth_corpus['root']}",
        *FAST,
        "campp@model.net.timbre=ge2e",
        f"paths.data_dir={tmp_path / 'data'}",
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    before = {k: v.clone() for k, v in Ge2eEncoder().state_dict().items()}
    metrics, objects = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and -1.0 <= metrics["val/srcc"] <= 1.0
    net = objects["model"].net
    assert isinstance(net.timbre, Ge2eEncoder) and net.head.extra_dim == 256
    for k, v in net.timbre.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    assert net.timbre.cache is not None and net.timbre.cache.misses > 0
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # the export needs no package
    rm = AudioscoreRewardModel(objects["export_dir"])
    assert isinstance(rm.net.timbre, Ge2eEncoder) and rm.net.timbre.source is None
    files = sorted(str(p) for p in Path(synth_corpus["root"]).rglob("*.wav"))[:2]
    scores = rm.score_batch(files, 2, None)
    assert scores.shape == (2, 2) and np.isfinite(scores[:, 1]).all()
    for k, v in rm.net.timbre.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


def test_timbre_grid_ge2e_kind_replaces_every_campp_node(tmp_path):
    grid = te.load_grid(["campp.kind=ge2e"])
    for exp, node in [("hybrid_campp_grl", "timbre"), ("hybrid_campp_proj_grl", "encoder")]:
        cfg = te.compose_cell(grid, tmp_path / "c", exp, 0, tmp_path / "r", timbre="ge2e")
        (path,) = te.campp_nodes(cfg)
        assert path.endswith(node)
        assert OmegaConf.select(cfg, path)._target_ == te.GE2E_TARGET
    assert te.campp_weights(grid, tmp_path) is None
    assert not te.campp_nodes(
        te.compose_cell(grid, tmp_path / "c", "muq_lora", 0, tmp_path / "r", timbre="ge2e")
    )
    with pytest.raises(ValueError, match="use another --out"):
        te.campp_weights(te.load_grid([]), tmp_path)  # random cells do not join ge2e ones
