"""SongEval: its released head starts our SongEvalHead (`init=songeval:PATH[#dimension]`), and
`model=songeval` scores with MuQ layer 6 + the five-output head (tiny random model offline).

SongEval's head forward is recomputed here from its published description (`model.py`
`Generator`: ffd, 4 chained 8-head attentions, concat(mean(attn), max(ffd)), fc, tanh * 2 + 3),
on weights written under SongEval's own key names, so nothing is checked against itself.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers.bench import make_cfg, make_toy_bench
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from audiobase.audio import load_audio
from audiobase.songeval_head import HeadInitError, SongEvalHead
from audiobase.weights import MissingWeightsError
from audioscore.export import export_scorer, load_net
from bench.run import run
from rewards.base import MUSICALITY
from rewards.songeval import (
    SongEvalCheckpointError,
    SongEvalRewardModel,
    build_tiny_songeval,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CONF = Path(__file__).parents[1] / "conf"
DIMS = ["coherence", "musicality", "memorability", "clarity", "naturalness"]  # eval.py order


# ---- SongEval's head, independently -------------------------------------------------------
def songeval_state(
    in_f: int = 1024, hidden: int = 4096, layers: int = 4, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random head weights under SongEval's key names and shapes (fc: 5 outputs)."""
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        shapes |= {
            f"attn.{i}.in_proj_weight": (3 * in_f, in_f),
            f"attn.{i}.in_proj_bias": (3 * in_f,),
            f"attn.{i}.out_proj.weight": (in_f, in_f),
            f"attn.{i}.out_proj.bias": (in_f,),
        }
    shapes |= {
        "ffd.0.weight": (hidden, in_f),
        "ffd.0.bias": (hidden,),
        "ffd.2.weight": (in_f, hidden),
        "ffd.2.bias": (in_f,),
        "fc.weight": (5, 2 * in_f),
        "fc.bias": (5,),
    }
    scale = {k: 1 / math.sqrt(s[-1]) for k, s in shapes.items()}
    return {k: torch.randn(s, generator=g) * scale[k] for k, s in shapes.items()}


def attention(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, heads: int) -> torch.Tensor:
    """nn.MultiheadAttention(batch_first, eval) self-attention with weights `p*`: [B, T, D]."""
    B, T, D = x.shape
    q, k, v = F.linear(x, sd[f"{p}in_proj_weight"], sd[f"{p}in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(B, T, heads, D // heads).transpose(1, 2) for t in (q, k, v))  # [B,H,T,d]
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads), dim=-1)  # [B, H, T, T]
    o = (w @ v).transpose(1, 2).reshape(B, T, D)
    return F.linear(o, sd[f"{p}out_proj.weight"], sd[f"{p}out_proj.bias"])


def songeval_logits(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int = 8) -> torch.Tensor:
    """SongEval Generator.forward in eval mode, before tanh: x [B, T, D] -> [B, 5]."""
    h = F.linear(F.relu(F.linear(x, sd["ffd.0.weight"], sd["ffd.0.bias"])), sd["ffd.2.weight"])
    h = h + sd["ffd.2.bias"]  # [B, T, D]
    a, i = h, 0
    while f"attn.{i}.in_proj_weight" in sd:  # chained, no residual, no norm
        a, i = attention(a, sd, f"attn.{i}.", heads), i + 1
    pooled = torch.cat([a.mean(1), h.amax(1)], dim=-1)  # [B, 2D]
    return F.linear(pooled, sd["fc.weight"], sd["fc.bias"])


def songeval_scores(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(songeval_logits(sd, x)) * 2 + 3  # [B, 5] in (1, 5)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A full-size SongEval head (random) saved as the release's `ckpt/model.safetensors`."""
    root = tmp_path_factory.mktemp("songeval_release")
    sd = songeval_state()
    (root / "ckpt").mkdir()
    save_file(sd, str(root / "ckpt" / "model.safetensors"))
    return root, sd


# ---- head init ----------------------------------------------------------------------------
def test_released_head_loads_strictly_and_reproduces_musicality(release):
    root, sd = release
    head = SongEvalHead(in_dim=1024, init=f"songeval:{root / 'ckpt' / 'model.safetensors'}")
    head.eval()
    x = torch.randn(2, 37, 1024)
    mask = torch.ones(2, 37, dtype=torch.bool)
    with torch.no_grad():
        ours = head(x, mask)  # [2]
        want = songeval_scores(sd, x)  # [2, 5]
    assert ours.shape == (2,)
    torch.testing.assert_close(torch.tanh(ours) * 2 + 3, want[:, 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, songeval_logits(sd, x)[:, 1], atol=1e-5, rtol=1e-5)
    # every non-fc weight is SongEval's, under the same name
    for k, v in head.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, sd[k]), k


def test_dimension_choice_and_five_outputs(release):
    root, sd = release
    x = torch.randn(1, 20, 1024)
    mask = torch.ones(1, 20, dtype=torch.bool)
    with torch.no_grad():
        want = songeval_logits(sd, x)[0]
        clarity = SongEvalHead(in_dim=1024, init=f"songeval:{root}#clarity").eval()(x, mask)
        by_index = SongEvalHead(in_dim=1024, init=f"songeval:{root}#4").eval()(x, mask)
        five = SongEvalHead(in_dim=1024, out_dim=5, init=f"songeval:{root}").eval()(x, mask)
    torch.testing.assert_close(clarity[0], want[3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(by_index[0], want[4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(five[0], want, atol=1e-5, rtol=1e-5)


def test_plan_b_extra_columns_start_at_zero(release):
    root, sd = release
    head = SongEvalHead(in_dim=1024, extra_dim=16, init=f"songeval:{root}").eval()
    assert head.fc.weight.shape == (1, 2048 + 16)
    assert torch.equal(head.fc.weight[0, 2048:], torch.zeros(16))
    assert torch.equal(head.fc.weight[0, :2048], sd["fc.weight"][1])
    x, mask = torch.randn(1, 12, 1024), torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        got = head(x, mask, extra=torch.randn(1, 16))  # the timbre dims do not move it yet
    torch.testing.assert_close(got, songeval_logits(sd, x)[:, 1], atol=1e-5, rtol=1e-5)


def test_mismatched_head_fails_naming_the_keys(tmp_path, release):
    _, sd = release
    bad = dict(sd)
    bad["ffd.3.weight"] = bad.pop("ffd.2.weight")  # renamed
    bad["proj.scale"] = torch.ones(1)  # unexpected
    bad["fc.weight"] = torch.zeros(5, 100)  # wrong shape
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    with pytest.raises(HeadInitError) as e:
        SongEvalHead(in_dim=1024, init=f"songeval:{path}")
    msg = str(e.value)
    assert str(path) in msg
    for key in ("ffd.2.weight", "ffd.3.weight", "proj.scale", "fc.weight (file (5, 100)"):
        assert key in msg, key
    # a head of another width is refused the same way (all shapes named)
    with pytest.raises(
        HeadInitError, match=r"ffd\.0\.weight \(file \(4096, 1024\), head \(4096, 512\)"
    ):
        SongEvalHead(in_dim=512, init=f"songeval:{release[0]}")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("songeval:{root}#tempo", "unknown SongEval dimension 'tempo'.*musicality"),
        ("muq:{root}", "expected 'songeval:PATH"),
        ("songeval:{root}/nothing_here", "no SongEval head weights"),
        ("songeval:{root}#all", "5 SongEval dimension"),
    ],
)
def test_bad_init_specs_are_explained(release, spec, match):
    with pytest.raises(HeadInitError, match=match):
        SongEvalHead(in_dim=1024, init=spec.format(root=release[0]))


def test_songeval_needs_eight_heads(release):
    with pytest.raises(HeadInitError, match="8 heads"):
        SongEvalHead(in_dim=1024, heads=4, init=f"songeval:{release[0]}")


def test_train_config_head_init_and_export_without_the_file(tmp_path):
    """`model.net.head.init=songeval:...` in the training config builds a scorer whose head is
    SongEval's; the export no longer needs the file."""
    sd = songeval_state(in_f=32, hidden=64, layers=1, seed=3)  # tiny MuQ: 32-d features
    src = tmp_path / "head.safetensors"
    save_file(sd, str(src))
    with initialize_config_dir(config_dir=str(CONF / "train"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"model.net.head.init='songeval:{src}#musicality'",
                "model.net.head.hidden_dim=64",
                "model.net.head.attn_layers=1",
                "model.net.encoder.pretrained=null",
                "++model.net.encoder.muq_config=tiny",  # whether or not the group sets it
                "model.net.encoder.layer=1",
            ],
        )
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    net_cfg.pop("timbre", None)
    net = instantiate(net_cfg, _convert_="all")
    assert torch.equal(net.head.fc.weight[0], sd["fc.weight"][1])
    assert torch.equal(net.head.attn[0].in_proj_weight, sd["attn.0.in_proj_weight"])
    out = export_scorer(net, tmp_path / "export", net_config=net_cfg)
    src.unlink()  # the export carries the weights; its config names no init file
    head_cfg = yaml.safe_load((out / "config.yaml").read_text())["net"]["head"]
    assert "init" not in head_cfg and str(src) not in str(head_cfg)
    loaded, _ = load_net(out)
    assert torch.equal(loaded.head.fc.weight, net.head.fc.weight)


# ---- the reward model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_songeval(tmp_path_factory.mktemp("songeval_tiny") / "songeval_tiny")


@pytest.fixture(scope="module")
def model(tiny_dir) -> SongEvalRewardModel:
    return SongEvalRewardModel(tiny_dir, muq=str(tiny_dir / "muq"))


def clips(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [0.2 * torch.randn(6000 + 3517 * i, generator=g) for i in range(n)]


def test_reward_model_contract(model):
    assert model.sr == 24_000
    assert model.extra_columns == DIMS
    pre = model.preprocess  # SongEval scores the whole clip at its own level
    assert (pre.sr, pre.max_dur, pre.target_lufs) == (24_000, None, None)
    out = model.score_batch(clips(), batch_size=4)
    assert out.shape == (4, 7)
    assert np.isnan(out[:, 0]).all()
    np.testing.assert_array_equal(out[:, MUSICALITY], out[:, 2 + DIMS.index("musicality")])
    assert ((out[:, 1:] > 1) & (out[:, 1:] < 5)).all()


def test_reward_model_is_muq_layer6_and_songeval_head(tiny_dir, model):
    """Independently: MuQ.from_pretrained -> hidden_states[6] -> SongEval's head -> tanh*2+3."""
    from muq import MuQ

    muq = MuQ.from_pretrained(str(tiny_dir / "muq")).eval()
    sd = load_file(str(tiny_dir / "ckpt" / "model.safetensors"))
    wav = clips(1)[0]
    with torch.no_grad():
        feats = muq(wav[None], output_hidden_states=True)["hidden_states"][6]
        want = songeval_scores(sd, feats)[0].double().numpy()
    got = model.score_batch([wav], batch_size=1)[0, 2:]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_batched_equals_one_by_one(model):
    waves = clips(5)
    batched = model.score_batch(waves, batch_size=5)
    alone = np.concatenate([model.score_batch([w], batch_size=1) for w in waves])
    np.testing.assert_allclose(batched[:, 1:], alone[:, 1:], atol=1e-5)


def test_feature_cache_by_content(tiny_dir, model, tmp_path, monkeypatch):
    cached = SongEvalRewardModel(tiny_dir, muq=str(tiny_dir / "muq"), cache_dir=str(tmp_path))
    waves = clips(2)
    first = cached.score_batch(waves, 2)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2  # one entry per clip

    def no_muq(*a, **k):
        raise AssertionError("MuQ ran on a cached clip")

    monkeypatch.setattr(cached.encoder.muq, "forward", no_muq)
    np.testing.assert_allclose(cached.score_batch(waves, 2)[:, 1:], first[:, 1:], atol=1e-6)
    np.testing.assert_allclose(model.score_batch(waves, 2)[:, 1:], first[:, 1:], atol=1e-5)


def test_paths_and_bad_items(model, tmp_path):
    from audiobase.audio import save_audio

    wav = clips(1)[0].numpy()
    path = save_audio(tmp_path / "a.wav", wav, 24_000)
    from_file = model.score_batch([str(path)], 1)
    from_wave = model.score_batch([torch.from_numpy(load_audio(path, 24_000))], 1)
    np.testing.assert_allclose(from_file[:, 1:], from_wave[:, 1:], atol=1e-6)
    with pytest.raises(Exception, match="nope.wav"):
        model.score_batch([str(path), str(tmp_path / "nope.wav")], 2)


def test_strict_loading_refuses_a_mismatched_checkpoint(tiny_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    weights = bad / "ckpt" / "model.safetensors"
    sd = load_file(str(weights))
    sd["attn.9.in_proj_weight"] = sd.pop("attn.1.in_proj_weight")
    save_file(sd, str(weights))
    with pytest.raises(HeadInitError) as e:
        SongEvalRewardModel(bad, muq=str(tiny_dir / "muq"))
    assert "attn.1.in_proj_weight" in str(e.value) and "attn.9.in_proj_weight" in str(e.value)
    assert str(weights) in str(e.value)
    # a config whose feature width is not MuQ's
    cfg = yaml.safe_load((tiny_dir / "config.yaml").read_text())
    cfg["generator"]["in_features"] = 48
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SongEvalCheckpointError, match="48-d features"):
        SongEvalRewardModel(bad, muq=str(tiny_dir / "muq"))
    # a config that is not SongEval's is read as data and refused, never built
    cfg["generator"]["_target_"] = "os.system"
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SongEvalCheckpointError, match="os.system"):
        SongEvalRewardModel(bad, muq=str(tiny_dir / "muq"))
    with pytest.raises(
        MissingWeightsError, match=r"git clone .*model.checkpoint=.*SONGEVAL_CHECKPOINT"
    ):
        SongEvalRewardModel(tmp_path / "missing", muq=str(tiny_dir / "muq"))


def test_bench_run_model_songeval_tiny(tmp_path):
    toy = tmp_path / "toy"
    make_toy_bench(toy, corrupt=False, missing=False)
    ckpt = tmp_path / "models" / "songeval_tiny"
    with initialize_config_dir(config_dir=str(CONF / "bench"), version_base="1.3"):
        composed = compose("bench", overrides=["model=songeval_tiny", f"model.checkpoint={ckpt}"])
    cfg = make_cfg(toy, tmp_path / "out", num_workers=0, n_boot=0, device="cpu")
    cfg.model = composed.model
    metrics, info = run(cfg)
    assert (ckpt / "ckpt" / "model.safetensors").is_file()  # built on first use
    assert info["failed_rows"] == 0 and info["total_rows"] == 31
    rows = [json.loads(x) for x in Path(info["results"]).read_text().splitlines()]
    row = next(r for r in rows if r["benchmark_dataset"] == "PAM")
    # the bench decoded the whole clip at 24 kHz, as the model's own contract says
    model = SongEvalRewardModel(ckpt, muq=str(ckpt / "muq"))
    direct = model.score_batch([os.path.join(str(toy), row["audio-path"])], 1)[0]
    assert row["predicted_musicality"] == pytest.approx(direct[MUSICALITY], abs=1e-5)
    assert row["predicted_text-music alignment"] is None
    if "predicted_coherence" in row:  # the runner writes a model's extra_columns
        assert row["predicted_coherence"] == pytest.approx(direct[2], abs=1e-5)
    assert any(r["dataset"] == "PAM" for r in metrics["summary"])
