"""The original scorer's checkpoints: `python -m audioscore.convert legacy` and `init_from=`.

Every checkpoint here is written from scratch in the original's layout (tests/helpers/legacy.py)
and every expected score comes from an independent computation of the original's forward.
"""

from __future__ import annotations

import logging
import shutil
import time

import hydra
import numpy as np
import pytest
import torch
import yaml
from helpers.legacy import original_logit, write_legacy_checkpoint
from helpers.train import make_cfg

from audiobase.audio import load_audio, save_audio
from audiobase.muq import build_tiny_muq_dir, large_muq_config
from audioscore.convert import main as convert_main
from audioscore.export import load_scorer
from audioscore.legacy import LEGACY_PREPROCESS, LegacyFormatError, read_legacy
from audioscore.train import train
from audioscore.training.init_from import adopt_init_lora, load_init_weights
from rewards.audioscore_rm import AudioscoreRewardModel

pytestmark = pytest.mark.usefixtures("one_thread")

# a tiny MuQ deep enough to have layers above SongEval's tap (layer 6)
TINY = dict(dim=32, depth=8)


@pytest.fixture(scope="module")
def tiny_muq(tmp_path_factory):
    return build_tiny_muq_dir(tmp_path_factory.mktemp("muq") / "tiny8", depth=TINY["depth"])


def muq_from(path):
    from muq import MuQ  # heavy: only where a MuQ is built

    return MuQ.from_pretrained(str(path)).eval()


def clip(tmp_path, seconds=2.5, seed=0):
    """A 24 kHz file of noisy tones, and the samples the original would read from it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(24_000 * seconds)) / 24_000
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    path = save_audio(tmp_path / f"clip{seed}.wav", wav.astype(np.float32), 24_000)
    return path, torch.from_numpy(load_audio(path, 24_000))


def test_converted_lora_checkpoint_scores_minus_the_original_logit(tmp_path, tiny_muq):
    ckpt = write_legacy_checkpoint(
        tmp_path / "orig", **TINY, r=8, alpha=12, hidden=64, attn_layers=2, grl=True
    )
    out = tmp_path / "export"
    assert convert_main(["legacy", str(ckpt), str(out), "--muq", str(tiny_muq)]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["preprocess"] == LEGACY_PREPROCESS.to_dict()  # whole file, no loudness change
    assert config["net"]["encoder"]["lora"]["r"] == 8
    assert config["net"]["encoder"]["lora"]["alpha"] == 12
    notes = " ".join(config["meta"]["dropped"])
    assert "speaker_discriminator.0.weight" in notes and "above the layer-6 tap" in notes

    path, wav = clip(tmp_path)
    muq = muq_from(tiny_muq)
    expected = -original_logit(muq, ckpt, wav)
    scorer = load_scorer(out)
    got = scorer.score([str(path)])[0]
    assert got == pytest.approx(expected, abs=1e-4)
    no_lora = shutil.copytree(ckpt, tmp_path / "no_lora")
    (no_lora / "muq_lora.pt").unlink()
    assert abs(got + original_logit(muq, no_lora, wav)) > 1e-3  # the LoRA counts
    assert scorer.score([wav.numpy()])[0] == pytest.approx(got, abs=1e-6)
    # the reward-model route (bench.run model=audioscore, rewards.serve) gives the same score
    assert AudioscoreRewardModel(str(out)).score_batch([str(path)], 1, None)[0, 1] == pytest.approx(
        got
    )


def test_legacy_scale_prints_the_original_numbers(tmp_path, tiny_muq):
    ckpt = write_legacy_checkpoint(tmp_path / "orig", **TINY, r=4, alpha=4, hidden=64, seed=1)
    out = tmp_path / "export"
    assert (
        convert_main(["legacy", str(ckpt), str(out), "--muq", str(tiny_muq), "--scale", "legacy"])
        == 0
    )
    assert yaml.safe_load((out / "config.yaml").read_text())["calibration"] == {
        "kind": "tanh",
        "scale": 2.0,
        "offset": 2.0,
    }
    path, wav = clip(tmp_path, seed=1)
    logit = original_logit(muq_from(tiny_muq), ckpt, wav)
    printed = 5 - (2 * np.tanh(logit) + 3)  # the original's generate_tag(inverse=True)
    assert load_scorer(out).score([str(path)])[0] == pytest.approx(printed, abs=1e-4)
    assert load_scorer(out, calibrated=False).score([str(path)])[0] == pytest.approx(
        -logit, abs=1e-4
    )


def test_frozen_muq_type_converts(tmp_path, tiny_muq):
    ckpt = write_legacy_checkpoint(
        tmp_path / "orig", **TINY, hidden=64, kind="SongEvalGenerator", seed=2
    )
    out = tmp_path / "export"
    assert convert_main(["legacy", str(ckpt), str(out), "--muq", str(tiny_muq)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["net"]["encoder"]["lora"] is None
    path, wav = clip(tmp_path, seed=2)
    expected = -original_logit(muq_from(tiny_muq), ckpt, wav)
    assert load_scorer(out).score([str(path)])[0] == pytest.approx(expected, abs=1e-4)


def test_bad_checkpoints_are_refused_naming_the_file(tmp_path, tiny_muq, capsys):
    ckpt = write_legacy_checkpoint(tmp_path / "orig", **TINY, r=4, alpha=8, hidden=64)
    (ckpt / "type.txt").write_text("SomethingElse")
    assert convert_main(["legacy", str(ckpt), str(tmp_path / "x"), "--muq", str(tiny_muq)]) == 2
    err = capsys.readouterr().err
    assert "type.txt" in err and "SomethingElse" in err and "SongEvalGenerator_audio_lora" in err
    assert not (tmp_path / "x").exists()
    (ckpt / "type.txt").write_text("SongEvalGenerator_audio_lora")
    missing_muq = str(tmp_path / "no_muq_here")
    assert convert_main(["legacy", str(ckpt), str(tmp_path / "x"), "--muq", missing_muq]) == 2
    assert "cannot build the original's net on MuQ" in capsys.readouterr().err
    (ckpt / "muq_lora.pt").write_bytes(b"not a torch file")
    with pytest.raises(LegacyFormatError, match="muq_lora.pt"):
        read_legacy(ckpt)
    with pytest.raises(LegacyFormatError, match="no type.txt"):
        read_legacy(tmp_path)


def tiny_run_checkpoint(tmp_path):
    """An original-format checkpoint that fits `debug=tiny`'s net (32-d MuQ, head 64 / 1 attn)
    with another LoRA rank (8 / 12 vs the config's 4 / 8)."""
    return write_legacy_checkpoint(
        tmp_path / "orig", **TINY, r=8, alpha=12, hidden=64, attn_layers=1, grl=True, seed=3
    )


def test_init_from_original_checkpoint_adopts_lora_and_fills_weights(
    tmp_path, synth_corpus, caplog
):
    ckpt = tiny_run_checkpoint(tmp_path)
    cfg = make_cfg(tmp_path / "run", synth_corpus, f"init_from={ckpt}")
    with caplog.at_level(logging.INFO, logger="audioscore.training.init_from"):
        adopt_init_lora(cfg)
        assert (cfg.model.net.encoder.lora.r, cfg.model.net.encoder.lora.alpha) == (8, 12)
        net = hydra.utils.instantiate(cfg.model).net
        load_init_weights(net, str(ckpt))
    head = torch.load(ckpt / "weights.pt", weights_only=True)
    lora = torch.load(ckpt / "muq_lora.pt", weights_only=True)
    own = net.state_dict()
    assert torch.equal(own["head.ffd.0.weight"], head["ffd.0.weight"])
    assert torch.equal(own["head.fc.weight"], -head["fc.weight"][1:2])
    key = "model.conformer.layers.1.self_attn.linear_v"
    assert torch.equal(
        own[f"encoder.muq.{key}.lora_B.default.weight"], lora[f"{key}.audio_lora.lora_B"]
    )
    log = caplog.text
    assert "LoRA r=8 alpha=12 adopted" in log
    assert "speaker-discriminator" in log  # the GRL part, reported and dropped
    # the net has MuQ layers 0-1: LoRA of layers 2-5 has no place; random MuQ base not filled
    assert "ignored" in log and "layers.{2-5}.self_attn.linear_q.lora_A.default.weight" in log
    assert "not filled" in log and "encoder.muq.model.conv.linear.weight" in log


def test_init_from_original_checkpoint_trains_one_step(tmp_path, synth_corpus):
    ckpt = tiny_run_checkpoint(tmp_path)
    cfg = make_cfg(tmp_path / "run", synth_corpus, f"init_from={ckpt}", "data.steps_per_epoch=1")
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert np.isfinite(metrics["train/loss"])
    exported = yaml.safe_load((objects["export_dir"] / "config.yaml").read_text())
    assert exported["net"]["encoder"]["lora"]["r"] == 8  # the adopted rank travels on


def test_init_from_with_another_rank_names_the_overrides(tmp_path, synth_corpus):
    ckpt = tiny_run_checkpoint(tmp_path)
    net = hydra.utils.instantiate(make_cfg(tmp_path / "run", synth_corpus).model).net  # r=4
    with pytest.raises(
        ValueError, match="model.net.encoder.lora.r=8 model.net.encoder.lora.alpha=12"
    ):
        load_init_weights(net, str(ckpt))
    cfg = make_cfg(
        tmp_path / "run", synth_corpus, f"init_from={ckpt}", "model.net.encoder.lora=null"
    )
    with pytest.raises(ValueError, match=r"model.net.encoder.lora=\{r: 8, alpha: 12\}"):
        adopt_init_lora(cfg)


def test_large_preset_is_muq_large():
    cfg = large_muq_config()
    assert (cfg["encoder_dim"], cfg["encoder_depth"], cfg["conv_dim"]) == (1024, 12, 512)
    w2v2 = cfg["w2v2_config"]
    assert (w2v2["num_attention_heads"], w2v2["intermediate_size"]) == (16, 4096)
    assert (w2v2["conv_depthwise_kernel_size"], w2v2["position_embeddings_type"]) == (31, "rotary")
    assert w2v2["layerdrop"] == 0.0


@pytest.mark.slow
def test_full_size_original_checkpoint_converts_exactly(tmp_path):
    """MuQ-large's architecture (random), r=128, alpha=48, 48 LoRA modules, SongEval's head."""
    from muq import MuQ

    torch.manual_seed(0)
    muq = MuQ(large_muq_config()).eval()
    assert sum(p.numel() for p in muq.parameters()) == pytest.approx(328.9e6, rel=1e-3)
    muq.save_pretrained(tmp_path / "muq_large")
    ckpt = write_legacy_checkpoint(tmp_path / "orig", dim=1024, depth=12, r=128, alpha=48)
    assert len(read_legacy(ckpt).dropped) == 2  # fc rows, LoRA above the tap
    out = tmp_path / "export"
    assert convert_main(["legacy", str(ckpt), str(out), "--muq", str(tmp_path / "muq_large")]) == 0
    path, wav = clip(tmp_path, seconds=3.0)
    t0 = time.perf_counter()
    got = load_scorer(out).score([str(path)])[0]
    print(f"converted export: {got:.6f} in {time.perf_counter() - t0:.1f} s")
    expected = -original_logit(muq, ckpt, wav)
    print(f"independent original forward, negated: {expected:.6f}; diff {abs(got - expected):.2e}")
    assert got == pytest.approx(expected, abs=1e-4)
