"""The reward-model contract: inputs from either runner, waveform loading, per-item failures, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.routes import make_tiny_export
from helpers.upstream import UpstreamBatchInput
from omegaconf import OmegaConf

from audiobase.audio import AudioDecodeError, AudioTooShortError
from rewards import BatchInput, BenchmarkBatchInput, RewardModel, as_input
from rewards.base import ScoreItemError, load_waveform
from rewards.build import build_reward_model

CONF = Path(__file__).resolve().parents[1] / "conf" / "bench" / "model"
REWARD_CONFIGS = ["cmi_rm", "cmi_rm_tiny", "audioscore", "custom", "http"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_as_input_accepts_every_form():
    wav = torch.zeros(10)
    assert as_input(UpstreamBatchInput("a.wav", "t", "l", "r.wav")) == BatchInput(
        "a.wav", "t", "l", "r.wav"
    )
    assert as_input(UpstreamBatchInput("a.wav", None, None)) == BatchInput("a.wav", "", "", None)
    assert as_input({"audio": "a.wav", "text": "t", "extra": 1}) == BatchInput("a.wav", "t")
    assert as_input("a.wav") == BatchInput("a.wav")
    x = BatchInput(wav, "t")
    assert as_input(x) is x and BenchmarkBatchInput is BatchInput
    assert set(x.to_dict()) == {"audio", "text", "lyrics", "ref_audio"}


def test_load_waveform_forms_and_errors(tmp_path):
    stereo = torch.stack([torch.ones(48000), -torch.ones(48000) * 0.5])
    out = load_waveform(stereo, 24000, max_dur=1.0)
    assert out.shape == (24000,) and torch.allclose(out, torch.full((24000,), 0.25))
    assert load_waveform(np.ones((1, 100), dtype=np.float64), 24000).dtype == torch.float32
    path = tmp_path / "tone.wav"
    tone = 0.3 * np.sin(np.arange(48000) / 10).astype(np.float32)
    sf.write(path, tone, 48000, subtype="FLOAT")
    loaded = load_waveform(str(path), 24000, max_dur=0.5)
    assert loaded.shape == (12000,)
    with pytest.raises(AudioTooShortError, match="at least 2000"):
        load_waveform(torch.zeros(10), 24000, min_samples=2000)
    with pytest.raises(AudioDecodeError, match="NaN"):
        load_waveform(torch.tensor([0.0, float("nan")]), 24000)
    with pytest.raises(TypeError, match="path or a waveform"):
        load_waveform(3.5, 24000)
    with pytest.raises(Exception, match="missing.wav"):
        load_waveform(str(tmp_path / "missing.wav"), 24000)


class Flaky(RewardModel):
    """Fails on any batch containing an item whose text is 'bad'."""

    sr = 24000

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        for i, x in enumerate(inputs):
            if x.text == "bad":
                raise ScoreItemError(i, x, "broken on purpose")
        return np.asarray([[len(x.text), float(x.audio.sum())] for x in inputs], dtype=float)


def test_default_score_batch_detailed_isolates_failures():
    xs = [
        BatchInput(torch.ones(5), "ok"),
        BatchInput(torch.ones(5), "bad"),
        BatchInput(torch.ones(3), "fine"),
    ]
    scores, errors = Flaky().score_batch_detailed(xs, 3, 30.0)
    assert errors[0] is None and errors[2] is None
    assert "item 0 (<waveform>): broken on purpose" in errors[1]
    np.testing.assert_array_equal(scores[[0, 2]], [[2, 5], [4, 3]])
    assert np.isnan(scores[1]).all()
    good, errs = Flaky().score_batch_detailed(xs[:1], 1, 30.0)
    assert errs == [None] and good.tolist() == [[2, 5]]


@pytest.mark.parametrize("name", REWARD_CONFIGS)
def test_reward_configs_are_marked_and_named(name):
    path = CONF / f"{name}.yaml"
    assert path.read_text().splitlines()[0] == "# reward model (python -m bench.run)"
    cfg = OmegaConf.load(path)
    assert cfg.name == name
    keys = set(cfg.keys())  # `in cfg` is False for a mandatory `???` value
    assert ("_target_" in keys) ^ ("class_path" in keys)
    assert "score_kwargs" in keys


def test_build_tiny_cmi_rm_from_config(tmp_path_factory):
    cfg = OmegaConf.load(CONF / "cmi_rm_tiny.yaml")
    cfg.checkpoint = str(tmp_path_factory.getbasetemp() / "cmi_rm_tiny")
    model, score_kwargs = build_reward_model(cfg)
    assert isinstance(model, RewardModel) and model.sr == 24000 and score_kwargs == {}
    assert model.score_batch([BatchInput(torch.zeros(24000) + 0.01, "x")], 1, 30.0).shape == (1, 2)


def test_build_http_from_config_without_network():
    cfg = OmegaConf.load(CONF / "http.yaml")
    model, _ = build_reward_model(cfg)
    assert model.url == "http://127.0.0.1:8000/score" and model.transport.concurrency == 4


def test_build_errors():
    with pytest.raises(ValueError, match="needs `_target_` or `class_path`"):
        build_reward_model({"name": "x"})
    with pytest.raises(Exception, match="class_path"):
        build_reward_model(OmegaConf.load(CONF / "custom.yaml"))  # class_path: ??? must be set
    with pytest.raises(TypeError, match="no sr/score_batch"):
        build_reward_model({"name": "x", "_target_": "collections.OrderedDict"})


def test_audioscore_export_through_config(tmp_path):
    """A tiny exported plan-A scorer, built and exported the way audioscore.train does, via model=audioscore."""
    out = make_tiny_export(tmp_path)
    cfg = OmegaConf.load(CONF / "audioscore.yaml")
    cfg.checkpoint = str(out)
    model, _ = build_reward_model(cfg)
    g = torch.Generator().manual_seed(3)
    xs = [
        BatchInput(0.1 * torch.randn(n, generator=g), "t") for n in (36_000, 20_000, 36_000, 50_000)
    ]
    batched = model.score_batch(xs, 4, 30.0)
    alone = np.concatenate([model.score_batch([x], 1, 30.0) for x in xs])
    assert batched.shape == (4, 2) and np.isnan(batched[:, 0]).all() and np.ptp(batched[:, 1]) > 0
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="exported scorer not found"):
        cfg.checkpoint = str(tmp_path / "nope")
        build_reward_model(cfg)
