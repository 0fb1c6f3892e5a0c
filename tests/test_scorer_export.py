"""Export -> reload -> score: batching invariance, fresh-process reload, LoRA-only vs full,
calibration stored in the export (`calibrated=False` gives raw)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from helpers.train import net_config
from hydra.utils import instantiate
from safetensors.torch import load_file

from audiobase.audio import AudioError, save_audio
from audiobase.muq import build_tiny_muq_dir
from audioscore.calibrate import TanhCalibration, fit_calibration
from audioscore.export import DEFAULT_PREPROCESS, ExportError, export_scorer, load_scorer
from rewards.audioscore_rm import AudioscoreRewardModel
from rewards.base import BatchInput, RewardModel


@pytest.fixture(scope="module")
def trained_net(tmp_path_factory):
    """A net whose LoRA deltas are non-zero, as after training."""
    tiny = build_tiny_muq_dir(tmp_path_factory.mktemp("muq") / "tiny_muq")
    torch.manual_seed(0)
    net = instantiate(net_config(str(tiny)), _convert_="all")
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def exports(trained_net, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = net_config(str(trained_net.encoder.pretrained))
    full = export_scorer(trained_net, root / "full", net_config=cfg, save_full_encoder=True)
    lora = export_scorer(trained_net, root / "lora", net_config=cfg, save_full_encoder=False)
    return full, lora


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("clips")
    wavs = [rng.normal(0, 0.1, n).astype(np.float32) for n in (36_000, 36_000, 20_000, 50_000)]
    paths = [str(save_audio(d / f"c{i}.wav", w, 24_000)) for i, w in enumerate(wavs)]
    return wavs, paths


def test_batched_equals_one_by_one(exports, clips):
    model = AudioscoreRewardModel(exports[0])
    wavs, paths = clips
    inputs = [torch.from_numpy(wavs[0]), paths[1], BatchInput(audio=paths[2]), wavs[3]]
    batched = model.score_batch(inputs, batch_size=4, max_dur=30.0)
    single = np.concatenate([model.score_batch([x], batch_size=1, max_dur=30.0) for x in inputs])
    assert batched.shape == (4, 2) and np.isnan(batched[:, 0]).all()
    np.testing.assert_allclose(batched[:, 1], single[:, 1], atol=1e-4)
    assert np.ptp(batched[:, 1]) > 0  # different clips, different scores


def test_lora_only_and_full_exports_agree(exports, clips, trained_net):
    full, lora = exports
    keys_full = set(load_file(str(full / "model.safetensors")))
    keys_lora = set(load_file(str(lora / "model.safetensors")))
    assert any("lora_B" in k for k in keys_lora)
    assert not any("base_layer" in k or "conv.conv" in k for k in keys_lora)
    assert keys_lora < keys_full
    wavs = [torch.from_numpy(w) for w in clips[0]]
    a = AudioscoreRewardModel(full).score_batch(wavs, 4, 30.0)[:, 1]
    b = AudioscoreRewardModel(lora).score_batch(wavs, 4, 30.0)[:, 1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    with torch.no_grad():  # and both equal the in-memory net on the same preprocessing
        prepared = [torch.from_numpy(DEFAULT_PREPROCESS.apply(w))[None] for w in clips[0]]
        ref = [trained_net(x)["score"].item() for x in prepared]
    np.testing.assert_allclose(a, ref, atol=1e-5)


def test_reload_in_fresh_process_scores_identically(exports, clips):
    _, paths = clips
    here = AudioscoreRewardModel(exports[1]).score_batch(paths, 2, 30.0)[:, 1]
    code = (
        "import json,sys; from rewards.audioscore_rm import AudioscoreRewardModel;"
        "m = AudioscoreRewardModel(sys.argv[1]);"
        "print(json.dumps(m.score_batch(sys.argv[2:], 2, 30.0)[:, 1].tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(exports[1]), *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    there = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(here, there, atol=1e-6)


def test_reward_model_contract(exports):
    model = AudioscoreRewardModel(checkpoint=str(exports[0]), device="cpu")
    assert isinstance(model, RewardModel) and model.sr == 24_000
    with pytest.raises(AudioError, match="need at least"):
        model.score_batch([torch.zeros(500)], 1, 10.0)


def test_broken_exports_fail_clearly(exports, tmp_path):
    with pytest.raises(ExportError, match="no config.yaml"):
        AudioscoreRewardModel(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text((exports[1] / "config.yaml").read_text())
    (bad / "model.safetensors").write_bytes((exports[0] / "model.safetensors").read_bytes())
    cfg = (bad / "config.yaml").read_text().replace("layer: 1", "layer: 2")
    (bad / "config.yaml").write_text(cfg)
    with pytest.raises(ExportError, match="do not match"):
        AudioscoreRewardModel(bad)


def test_calibration_round_trips_through_the_export(trained_net, clips, tmp_path):
    cfg = net_config(str(trained_net.encoder.pretrained))
    raw = AudioscoreRewardModel(export_scorer(trained_net, tmp_path / "raw", net_config=cfg))
    assert raw.scorer.calibration is None  # no calibration: scores stay raw
    wavs = [torch.from_numpy(w) for w in clips[0]]
    raw_scores = raw.score_batch(wavs, 4)[:, 1]
    cal = fit_calibration(raw_scores, [60.0, 70.0, 80.0, 90.0], source="val")
    out = export_scorer(trained_net, tmp_path / "cal", net_config=cfg, calibration=cal)
    assert yaml.safe_load((out / "config.yaml").read_text())["calibration"] == cal.to_dict()
    model = AudioscoreRewardModel(out)
    assert model.scorer.calibration == cal
    calibrated = model.score_batch(wavs, 4)[:, 1]
    np.testing.assert_allclose(calibrated, cal(raw_scores), atol=1e-6)
    assert np.abs(calibrated - raw_scores).min() > 10  # on the label scale now
    # calibrated=false gives raw, as a reward model and from the loader
    off = AudioscoreRewardModel(out, calibrated=False)
    np.testing.assert_allclose(off.score_batch(wavs, 4)[:, 1], raw_scores, atol=1e-6)
    assert load_scorer(out, calibrated=False).score(wavs).tolist() == pytest.approx(
        raw_scores.tolist(), abs=1e-6
    )


def test_tanh_calibration_and_a_bad_section(trained_net, tmp_path):
    cfg = net_config(str(trained_net.encoder.pretrained))
    legacy = TanhCalibration(scale=2.0, offset=2.0)  # what the legacy converter writes
    out = export_scorer(trained_net, tmp_path / "tanh", net_config=cfg, calibration=legacy)
    wav = [torch.zeros(24_000) + 0.01]
    model = load_scorer(out)
    raw = load_scorer(out, calibrated=False).score(wav)
    np.testing.assert_allclose(model.score(wav), 2.0 + 2.0 * np.tanh(raw), atol=1e-6)
    text = (out / "config.yaml").read_text().replace("kind: tanh", "kind: cubic")
    (out / "config.yaml").write_text(text)
    with pytest.raises(ExportError, match=r"config\.yaml: calibration kind must be one of"):
        AudioscoreRewardModel(out)
