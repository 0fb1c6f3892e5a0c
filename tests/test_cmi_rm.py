"""CMI-RM: official key names, strict loading, modes, batch independence, upstream compat, cache."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.remote_code import crafted_cmi_rm
from helpers.upstream import UpstreamBatchInput
from safetensors.torch import load_file, save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from audiobase.weights import MissingWeightsError
from rewards.base import BatchInput, RewardModel, ScoreItemError  # noqa: E402
from rewards.cmi_rm import CheckpointError, CMIRewardModel, CMIRMConfig  # noqa: E402
from rewards.cmi_rm import scorer as scorer_mod  # noqa: E402
from rewards.cmi_rm.model import CMIRewardNet  # noqa: E402
from rewards.cmi_rm.tiny import build_tiny_cmi_rm  # noqa: E402

SR = 24000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny_cmi_rm(tmp_path_factory.getbasetemp() / "cmi_rm_tiny")


@pytest.fixture(scope="module")
def model(tiny_dir):
    return CMIRewardModel(tiny_dir)


def noise(seconds: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(seconds * SR), generator=g)


def items() -> list[BatchInput]:
    return [
        BatchInput(noise(3.0, 1), "upbeat pop with synths", "la la la"),
        BatchInput(noise(5.2, 2), "slow jazz ballad", "", ref_audio=noise(2.0, 9)),
        BatchInput(noise(2.3, 3), "", ""),
        BatchInput(noise(31.0, 4), "long rock track", "verse one"),  # two 30 s chunks
    ]


def score_alone(m, xs, max_dur=30.0, **kw):
    return np.stack([m.score_batch([x], 1, max_dur, **kw)[0] for x in xs])


def test_key_names_match_official_layout(model):
    keys = set(load_file(model.checkpoint))
    for k in [
        "prompt_transformer.layers.0.0.norm.learned_gamma",
        "prompt_transformer.layers.0.0.to_q.weight",
        "prompt_transformer.layers.0.0.to_kv.weight",
        "prompt_transformer.layers.0.0.q_scale",
        "prompt_transformer.layers.0.0.k_scale",
        "prompt_transformer.layers.0.0.to_out.0.weight",
        "prompt_transformer.layers.0.1.0.learned_gamma",
        "prompt_transformer.layers.0.1.1.weight",
        "prompt_transformer.layers.0.1.4.weight",
        "joint_transformer.layers.0.0.to_q.weight",
        "score_projector.0.weight",
        "score_projector.1.bias",
        "score_projector.3.weight",
        "single_score_projector.3.weight",
        "alignment_head.3.weight",
        "quality_head.3.weight",
        "null_text_embedding",
        "null_lyrics_embedding",
        "null_audio_embedding",
        "eval_downsampler.mlp.0.weight",
        "ref_downsampler.mlp.3.weight",
    ]:
        assert k in keys, k
    assert not any(k.startswith(("audio_module.", "text_module.")) for k in keys)


def test_full_size_head_has_published_parameter_count(model):
    # 5 layers x 6,293,120 + 4 heads + 3 null embeddings = 33,072,261 (released config defaults)
    towers = (model.net.audio_module, model.net.text_module)
    net = CMIRewardNet(CMIRMConfig(), towers=towers)
    n = sum(v.numel() for v in net.head_state_dict().values())
    assert n == 33_072_261


def test_scores_shape_and_duck_typing(model):
    s = model.score_batch(items()[:2], 2, 30.0)
    assert s.shape == (2, 2) and s.dtype == np.float32 and np.isfinite(s).all()
    assert isinstance(model, RewardModel) and model.sr == SR


def test_batch_equals_alone_final_mode(model):
    xs = items()
    batched = model.score_batch(xs, len(xs), 30.0)
    np.testing.assert_allclose(batched, score_alone(model, xs), atol=1e-4)
    # the input order inside a batch does not matter either
    rev = model.score_batch(xs[::-1], 2, 30.0)[::-1]
    np.testing.assert_allclose(batched, rev, atol=1e-4)


def test_text_and_lyrics_encoded_once_per_batch(model, monkeypatch):
    calls = []
    real = scorer_mod.encode_text_tokens
    monkeypatch.setattr(
        scorer_mod, "encode_text_tokens", lambda tm, t: calls.append(list(t)) or real(tm, t)
    )
    xs = items()
    model.score_batch(xs + xs, 8, 30.0)
    assert len(calls) == 1
    assert sorted(calls[0]) == sorted({s for x in xs for s in (x.text, x.lyrics)})


def count_encoded_chunks(monkeypatch) -> list[int]:
    """Patch the exact MuQ pass to record how many chunks each pass encodes."""
    rows: list[int] = []
    real = scorer_mod.encode_audio_frames_exact
    monkeypatch.setattr(
        scorer_mod,
        "encode_audio_frames_exact",
        lambda am, wav, lengths: rows.append(wav.shape[0]) or real(am, wav, lengths),
    )
    return rows


def test_shared_reference_encoded_once_per_call(model, monkeypatch):
    # both sides of a pair carry the row's ref: the same tensor, or (decoded per side) an equal
    # copy; MuQ encodes it once per call, and the scores are what each clip gets alone
    ref = noise(2.0, 9)
    xs = [
        BatchInput(noise(3.0, 1), "pop", "la", ref_audio=ref),
        BatchInput(noise(2.5, 2), "pop", "la", ref_audio=ref),
        BatchInput(noise(4.0, 3), "pop", "la", ref_audio=ref.clone()),
        BatchInput(noise(2.0, 4), "jazz", "", ref_audio=noise(2.0, 8)),
        BatchInput(noise(3.5, 5), "rock", "", ref_audio=noise(2.0, 9).numpy()),
    ]
    alone = score_alone(model, xs)
    rows = count_encoded_chunks(monkeypatch)
    batched = model.score_batch(xs, 3, 30.0)  # two groups: the ref is still encoded once
    assert sum(rows) == len(xs) + 2  # five clips, two distinct references
    np.testing.assert_allclose(batched, alone, atol=1e-4)


def test_shared_reference_upstream_compat_unchanged(tiny_dir, monkeypatch):
    # upstream_compat reproduces upstream's calls: every clip's ref is encoded, duplicates too
    m = CMIRewardModel(tiny_dir, upstream_compat=True)
    ref = noise(2.0, 9)
    xs = [BatchInput(noise(3.0, i), "pop", "la", ref_audio=ref) for i in range(3)]
    calls: list[int] = []
    real = scorer_mod.encode_audio_frames
    monkeypatch.setattr(
        scorer_mod,
        "encode_audio_frames",
        lambda am, wav, mask: calls.append(wav.shape[0]) or real(am, wav, mask),
    )
    m.score_batch(xs, 3, 30.0)
    assert sum(calls) == 6


def test_max_dur_crops(model):
    x = items()[3]
    cropped = BatchInput(x.audio[: 10 * SR], x.text, x.lyrics)
    np.testing.assert_allclose(
        model.score_batch([x], 1, 10.0), model.score_batch([cropped], 1, 30.0), atol=1e-5
    )


def test_standard_mode_sliding_windows_average(tiny_dir):
    m = CMIRewardModel(tiny_dir, mode="standard")
    xs = items()[:3]
    batched = m.score_batch(xs, 3, 2.0, dur_step=1.0)
    np.testing.assert_allclose(batched, score_alone(m, xs, 2.0, dur_step=1.0), atol=1e-4)
    # clip 0 (3 s): windows [0,2) and [1,3) averaged
    x = xs[0]
    wins = [BatchInput(x.audio[a * SR : (a + 2) * SR], x.text, x.lyrics) for a in (0, 1)]
    expected = m.score_batch(wins, 2, 2.0).mean(axis=0)
    np.testing.assert_allclose(batched[0], expected, atol=1e-5)


def test_upstream_compat_reproduces_batch_dependence(tiny_dir, model):
    compat = CMIRewardModel(tiny_dir, upstream_compat=True)
    xs = items()[:3]  # no 30 s chunk split: alone, upstream equals our default
    alone = score_alone(compat, xs)
    np.testing.assert_allclose(alone, score_alone(model, xs), atol=1e-4)
    # batched with a clip that has a reference, upstream feeds ref-less clips encoded silence
    batched = compat.score_batch(xs, 3, 30.0)
    assert np.abs(batched[0] - alone[0]).max() > 1e-3
    np.testing.assert_allclose(
        batched[1], alone[1], atol=1e-4
    )  # the clip with the ref is unaffected here


def test_strict_loading_names_missing_unexpected_and_shape(tiny_dir, tmp_path):
    sd = load_file(str(tiny_dir / "model.safetensors"))
    cfg = (tiny_dir / "config.yaml").read_text()

    def write(d, name):
        out = tmp_path / name
        out.mkdir()
        save_file(d, str(out / "model.safetensors"))
        (out / "config.yaml").write_text(cfg)
        return out

    broken = dict(sd)
    del broken["score_projector.3.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: score_projector\.3\.weight"):
        CMIRewardModel(write(broken, "missing"))
    extra = dict(sd, **{"model.extra_head.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: model\.extra_head\.weight"):
        CMIRewardModel(write(extra, "unexpected"))
    wrong = dict(sd, **{"score_projector.3.bias": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"score_projector\.3\.bias \(file \(3,\)"):
        CMIRewardModel(write(wrong, "shape"))


def test_checkpoint_found_from_weights_file_and_errors(tiny_dir, tmp_path):
    m = CMIRewardModel(tiny_dir / "model.safetensors")  # the upstream runner passes the file
    assert m.checkpoint.endswith("model.safetensors")
    with pytest.raises(MissingWeightsError, match=r"huggingface-cli download HaiwenXia/CMI-RM"):
        CMIRewardModel(tmp_path / "nope")


def test_bad_items_are_named(model, tmp_path):
    missing = tmp_path / "gone.wav"
    with pytest.raises(ScoreItemError, match=r"item 1 \(.*gone\.wav\)"):
        model.score_batch([items()[0], BatchInput(str(missing), "x")], 2, 30.0)
    with pytest.raises(ScoreItemError, match="at least 1025"):
        model.score_batch([BatchInput(torch.zeros(100))], 1, 30.0)
    with pytest.raises(TypeError, match="unknown options"):
        model.score_batch(items()[:1], 1, 30.0, temperature=1.0)


def test_file_inputs_match_waveforms(model, tmp_path):
    import soundfile as sf

    x = items()[0]
    path = tmp_path / "clip.wav"
    sf.write(path, x.audio.numpy(), SR, subtype="FLOAT")
    np.testing.assert_allclose(
        model.score_batch([dataclasses.replace(x, audio=str(path))], 1, 30.0),
        model.score_batch([x], 1, 30.0),
        atol=1e-5,
    )


def test_feature_cache_hits_and_matches(tiny_dir, model, tmp_path, monkeypatch):
    cached = CMIRewardModel(tiny_dir, cache_dir=tmp_path / "cache")
    xs = items()[:3]
    first = cached.score_batch(xs, 3, 30.0)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 4  # 3 clips + 1 ref
    calls = []
    for name in ("encode_audio_frames", "encode_audio_frames_exact"):
        real = getattr(scorer_mod, name)
        monkeypatch.setattr(
            scorer_mod, name, lambda *a, real=real, **k: calls.append(1) or real(*a, **k)
        )
    again = cached.score_batch(xs, 3, 30.0)
    assert calls == []
    np.testing.assert_allclose(first, again, atol=1e-6)
    np.testing.assert_allclose(first, model.score_batch(xs, 3, 30.0), atol=1e-5)


def test_runs_under_cmi_rewardbench_runner_contract(tiny_dir):
    # inference_benchmark._build_model: Class(**init_kwargs) with checkpoint/device set by default
    init_kwargs = {"mode": "final"}
    init_kwargs.setdefault("checkpoint", str(tiny_dir / "model.safetensors"))
    init_kwargs.setdefault("device", "cpu")
    m = CMIRewardModel(**init_kwargs)
    assert hasattr(m, "sr") and callable(m.score_batch)
    rows = [UpstreamBatchInput(x.audio, x.text, x.lyrics, x.ref_audio) for x in items()[:3]]
    scores = m.score_batch(rows, batch_size=len(rows), max_dur=120.0)
    ali, mus = [float(scores[j, 0]) for j in range(3)], [float(scores[j, 1]) for j in range(3)]
    ours = CMIRewardModel(tiny_dir).score_batch(items()[:3], 3, 120.0)
    np.testing.assert_allclose(np.c_[ali, mus], ours, atol=1e-6)


def test_tiny_towers_carry_no_code(tiny_dir):
    """The folders the towers load from hold no `*.py` and no `auto_map`: nothing to opt in to."""
    from rewards.cmi_rm.towers import code_in

    for folder in (tiny_dir, *sorted((tiny_dir / "encoders").iterdir())):
        assert code_in(folder) == [], folder


def test_trust_remote_code_opts_in_to_a_folders_code(tiny_dir, tmp_path):
    """`trust_remote_code=True` (the model config's key) is the one opt-in: the same crafted
    folder that is refused by default then gets its code run. In a child process, so that the
    imported module lands in a scratch HF_MODULES_CACHE."""
    marker = tmp_path / "marker.txt"
    folder = crafted_cmi_rm(tiny_dir, tmp_path, marker)
    code = (
        "from rewards.cmi_rm import CMIRewardModel\n"
        "try:\n"
        f"    CMIRewardModel({str(folder)!r}, trust_remote_code=True)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert marker.read_text() == "code from the checkpoint ran"
