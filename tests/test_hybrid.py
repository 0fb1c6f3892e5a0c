"""Plan B: VocalScorer with a CAM++ timbre branch (clip level and frame level)."""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.train import compose_tiny, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from audiobase.muq import tiny_muq_config
from audiobase.songeval_head import SongEvalHead
from audioscore.export import export_scorer, read_export_config
from audioscore.models.components.campp import CamppEncoder, save_random_campp
from audioscore.models.components.fusion import FrameTimbre, align_frames
from audioscore.models.components.muq_encoder import MuQEncoder
from audioscore.models.components.scorer import VocalScorer, frozen_base_keys
from audioscore.studies.probe import probe
from audioscore.train import train
from rewards.audioscore_rm import AudioscoreRewardModel

TINY_CAMPP = {"embedding_size": 16, "growth_rate": 4, "bn_size": 2, "init_channels": 16}


@pytest.fixture(scope="module")
def campp_file(tmp_path_factory):
    return save_random_campp(tmp_path_factory.mktemp("campp") / "tiny.bin", seed=2, **TINY_CAMPP)


def tiny_muq() -> MuQEncoder:
    return MuQEncoder(pretrained=None, muq_config=tiny_muq_config(), layer=1, lora={"r": 4})


def tiny_head():
    return functools.partial(SongEvalHead, hidden_dim=32, attn_layers=1, heads=2, dropout=0.0)


def batch(seconds=(1.0, 1.6), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = [int(s * 24000) for s in seconds]
    wav = torch.zeros(len(n), max(n))
    for i, k in enumerate(n):
        wav[i, :k] = 0.1 * torch.randn(k, generator=g)
    return wav, torch.tensor(n)


def test_clip_level_plan_b_forward_backward(campp_file, tmp_path):
    torch.manual_seed(0)
    timbre = CamppEncoder(str(campp_file), cache_dir=str(tmp_path / "cache"))
    net = VocalScorer(tiny_muq(), tiny_head(), timbre=timbre)
    assert net.pooled_dim == 2 * 32 + 16
    wav, lengths = batch()
    out = net(wav, lengths, keys=["a:0", "b:0"])
    assert out["score"].shape == (2,) and out["pooled"].shape == (2, net.pooled_dim)
    # the timbre part of pooled is the unit-norm CAM++ embedding, identical to calling it alone
    torch.testing.assert_close(out["pooled"][:, -16:], timbre(wav, lengths))
    torch.testing.assert_close(out["timbre"].norm(dim=-1), torch.ones(2))
    out["score"].sum().backward()
    assert all(p.grad is None for p in timbre.parameters())
    lora = [p for n, p in net.encoder.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert net.head.fc.weight.grad[0, -16:].abs().sum() > 0  # the head uses the timbre dims
    # second pass is served from the cache and gives the same scores
    net.eval()
    again = net(wav, lengths, keys=["a:0", "b:0"])
    assert timbre.cache.hits == 2
    net2 = net(wav, lengths)
    torch.testing.assert_close(again["score"], net2["score"])


def test_align_frames():
    x = torch.arange(10.0).repeat(3, 1).t()  # [10, 3]
    y = align_frames(x, 5)
    assert y.shape == (5, 3)
    assert torch.all(y[1:, 0] > y[:-1, 0])  # keeps time order
    assert align_frames(x, 10) is x


def test_frame_level_fusion(campp_file):
    torch.manual_seed(0)
    campp = CamppEncoder(str(campp_file))
    frames = FrameTimbre(campp, proj_dim=8)
    net = VocalScorer(tiny_muq(), tiny_head(), frame_timbre=frames)
    assert net.pooled_dim == 2 * (32 + 8)  # the head sees MuQ frames + projected CAM++ frames
    wav, lengths = batch((0.8, 2.1), seed=1)
    _, mask = net.encoder(wav, lengths)
    assert frames(wav, lengths, mask).shape == (*mask.shape, 8)
    assert mask[0].sum() < mask[1].sum()
    out = net(wav, lengths)
    out["score"].sum().backward()
    assert frames.proj.weight.grad is not None and frames.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in campp.parameters())
    # CAM++ frames of an item are the same alone as padded in the batch (true-length fbank)
    alone = campp.frame_features(wav[:1, : lengths[0]], lengths[:1])[0]
    in_batch = campp.frame_features(wav, lengths)
    torch.testing.assert_close(in_batch[0], alone)
    assert in_batch[0].shape[0] < in_batch[1].shape[0]
    # 50 Hz CAM++ frames: about 2 per MuQ frame
    assert abs(in_batch[1].shape[0] - 2 * int(mask[1].sum())) <= 3


@pytest.fixture(scope="module")
def plan_b(tmp_path_factory):
    """experiment=hybrid_campp debug=tiny composed from conf/, net built, exported."""
    tmp = tmp_path_factory.mktemp("plan_b")
    cfg = compose_tiny("hybrid_campp", tmp)
    assert cfg.plan == "B" and cfg.model.net.timbre.tiny
    torch.manual_seed(0)
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    net = instantiate(net_config, _convert_="all")
    # perturb the CAM++ BatchNorm so the export must carry these exact weights
    with torch.no_grad():
        net.timbre.model.xvector.dense.nonlinear.batchnorm.running_mean.add_(0.5)
    net.eval()
    export = export_scorer(net, tmp / "export", net_config=net_config)
    return {"net": net, "export": export, "tmp": tmp}


def test_plan_b_config_builds_and_export_round_trips(plan_b):
    net = plan_b["net"]
    assert isinstance(net.timbre, CamppEncoder) and net.timbre.out_dim == 32
    # the tiny CAM++ has seeded weights built in memory: identified (cacheable), nothing written
    assert net.timbre.source is None and net.timbre.weights_sha1
    assert not list(plan_b["tmp"].rglob("*.bin"))
    rm = AudioscoreRewardModel(plan_b["export"])
    g = torch.Generator().manual_seed(3)
    wavs = [(0.1 * torch.randn(int(1.5 * 24000), generator=g)).numpy() for _ in range(3)]
    got = rm.score_batch(wavs, batch_size=2)
    assert got.shape == (3, 2) and np.isnan(got[:, 0]).all()
    prepared = np.stack([rm.preprocess.apply(w) for w in wavs])
    with torch.no_grad():
        x = torch.from_numpy(prepared)
        want = net(x, torch.full((3,), x.shape[1]))["score"].numpy()
    np.testing.assert_allclose(got[:, 1], want, atol=1e-4)
    torch.testing.assert_close(
        rm.net.timbre.model.xvector.dense.nonlinear.batchnorm.running_mean,
        net.timbre.model.xvector.dense.nonlinear.batchnorm.running_mean,
    )
    # the source-free config rebuilds the same encoder from the exported state dict
    clone = instantiate(net.timbre.standalone_config())
    clone.load_state_dict(net.timbre.state_dict())
    wav, lengths = batch()
    torch.testing.assert_close(clone(wav, lengths), net.timbre(wav, lengths))


def test_probe_singer_on_plan_b_export(plan_b, synth_corpus, tmp_path):
    """audioscore.studies.probe end to end: parts, chance level, a bad clip recorded and skipped."""
    groups = json.loads(Path(synth_corpus["train"]).read_text())
    base = Path(synth_corpus["train"]).parent
    for g in groups:
        for item in g:
            item["audio_file"] = str(base / item["audio_file"])
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav")
    groups.append([{"audio_file": str(bad), "score": 60.0, "singer": "s00"}])
    gfile = tmp_path / "groups.json"
    gfile.write_text(json.dumps(groups))
    audio = probe(str(plan_b["export"]), str(gfile), part="audio")
    n_clips = len({i["audio_file"] for g in groups for i in g}) - 1
    assert audio["n_clips"] == n_clips and len(audio["failures"]) == 1
    assert "broken.wav" in audio["failures"][0]
    assert audio["dim"] == plan_b["net"].pooled_dim - 32  # CAM++ dims left out
    assert audio["chance"] == pytest.approx(max_share(groups))
    assert 0.0 <= audio["accuracy"] <= 1.0
    assert audio["margin"] == pytest.approx(audio["accuracy"] - audio["chance"])


def max_share(groups) -> float:
    singers = Counter(
        i["singer"]
        for i in {i["audio_file"]: i for g in groups for i in g}.values()
        if not i["audio_file"].endswith("broken.wav")
    )
    return max(singers.values()) / sum(singers.values())


@pytest.mark.slow
def test_train_plan_b_end_to_end(tmp_path, synth_corpus):
    """python -m audioscore.train experiment=hybrid_campp_grl debug=tiny, shrunk: trains, fills
    the CAM++ feature cache, exports, and the export scores files."""
    cfg = compose_train(
        "experiment=hybrid_campp_grl",
        "debug=tiny",
        "logger=csv",
        f"data.root={synth_corpus['root']}",
        f"paths.data_dir={tmp_path / 'data'}",
        "data.num_workers=0",
        "data.preprocess.max_dur=2.0",
        "data.groups_per_batch=2",
        "data.max_group_size=4",
        "data.steps_per_epoch=2",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    metrics, objects = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and -1.0 <= metrics["val/srcc"] <= 1.0
    assert "val/adv_acc" in metrics
    cached = list((tmp_path / "data" / "feature_cache").rglob("*.safetensors"))
    assert cached  # validation centre crops were cached on disk
    assert objects["model"].net.timbre.cache.hits > 0  # and re-used in the second epoch
    rm = AudioscoreRewardModel(objects["export_dir"])
    files = sorted(str(p) for p in Path(synth_corpus["root"]).rglob("*.wav"))[:2]
    scores = rm.score_batch(files, 2, None)
    assert scores.shape == (2, 2) and np.isfinite(scores[:, 1]).all()


def test_frame_features_cached_per_key(campp_file, tmp_path):
    campp = CamppEncoder(str(campp_file), cache_dir=str(tmp_path / "cache"))
    wav, lengths = batch((0.8, 2.1), seed=4)
    want = campp.frame_features(wav, lengths)
    first = campp.frame_features(wav, lengths, keys=["a:0", "b:0"])
    assert campp.cache.misses == 2 and campp.cache.hits == 0
    again = campp.frame_features(wav, lengths, keys=["a:0", "b:0"])
    assert campp.cache.hits == 2
    for w, f, a in zip(want, first, again, strict=True):
        torch.testing.assert_close(f, w, rtol=0, atol=0)
        torch.testing.assert_close(a, w, rtol=0, atol=0)
    # embeddings and frames of the same key are separate entries
    campp(wav, lengths, keys=["a:0", "b:0"])
    assert campp.cache.misses == 4


@pytest.fixture(scope="module")
def plan_b_frame(tmp_path_factory):
    """experiment=hybrid_campp_frame debug=tiny composed from conf/, net built, exported."""
    tmp = tmp_path_factory.mktemp("plan_b_frame")
    cfg = compose_tiny("hybrid_campp_frame", tmp)
    assert cfg.plan == "B" and cfg.data.crop_grid_seconds == 1.0
    assert cfg.model.net.frame_timbre.campp.tiny and cfg.model.net.get("timbre") is None
    torch.manual_seed(0)
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    net = instantiate(net_config, _convert_="all")
    with torch.no_grad():  # trained-looking projection and CAM++ stats the export must carry
        net.frame_timbre.proj.weight.normal_(0.0, 0.5)
        net.frame_timbre.campp.model.xvector.dense.nonlinear.batchnorm.running_mean.add_(0.5)
    net.eval()
    export = export_scorer(net, tmp / "export", net_config=net_config)
    return {"net": net, "export": export, "tmp": tmp}


def test_plan_b_frame_config_builds_and_export_round_trips(plan_b_frame):
    net = plan_b_frame["net"]
    frames = net.frame_timbre
    assert isinstance(frames, FrameTimbre) and net.timbre is None
    assert isinstance(net.encoder, MuQEncoder) and net.encoder.has_lora  # MuQ where plan A has it
    assert net.pooled_dim == 2 * (net.encoder.out_dim + 64)
    assert frames.campp.cache is not None  # training batches' keys reach the CAM++ cache
    cfg = read_export_config(plan_b_frame["export"])
    assert cfg["net"]["encoder"]["pretrained"] is None  # backbone rebuilt from its own config
    # CAM++ travels in the state dict: reloading needs no weights source
    assert cfg["net"]["frame_timbre"]["campp"]["source"] is None
    rm = AudioscoreRewardModel(plan_b_frame["export"])
    assert isinstance(rm.net.frame_timbre, FrameTimbre)
    g = torch.Generator().manual_seed(5)
    wavs = [(0.1 * torch.randn(int(1.5 * 24000), generator=g)).numpy() for _ in range(3)]
    got = rm.score_batch(wavs, batch_size=2)
    assert got.shape == (3, 2) and np.isnan(got[:, 0]).all() and np.isfinite(got[:, 1]).all()
    prepared = np.stack([rm.preprocess.apply(w) for w in wavs])
    with torch.no_grad():
        x = torch.from_numpy(prepared)
        want = net(x, torch.full((3,), x.shape[1]))["score"].numpy()
    np.testing.assert_allclose(got[:, 1], want, atol=1e-4)
    assert np.ptp(got[:, 1]) > 0  # the scores depend on the clip
    torch.testing.assert_close(rm.net.frame_timbre.proj.weight, frames.proj.weight)
    # save_full_encoder=false drops exactly the MuQ base weights (what `pretrained` rebuilds)
    assert frozen_base_keys(net) == []  # random tiny MuQ: nothing to rebuild it from
    net.encoder.pretrained = "some/hub-id"
    try:
        base = frozen_base_keys(net)
    finally:
        net.encoder.pretrained = None
    state = net.state_dict()
    assert base and set(base) <= set(state)
    assert all(k.startswith("encoder.muq.") and "lora_" not in k for k in base)
    assert not any(
        k.startswith("encoder.muq.")
        for k in set(state) - set(base) - {k for k in state if "lora_" in k}
    )
    torch.testing.assert_close(
        rm.net.frame_timbre.campp.model.xvector.dense.nonlinear.batchnorm.running_mean,
        frames.campp.model.xvector.dense.nonlinear.batchnorm.running_mean,
    )


def test_plan_b_frame_keys_reach_campp_cache(plan_b_frame):
    net = plan_b_frame["net"]
    wav, lengths = batch((1.0, 1.6), seed=6)
    with torch.no_grad():
        plain = net(wav, lengths)["score"]
        first = net(wav, lengths, keys=["k1", "k2"])["score"]
        second = net(wav, lengths, keys=["k1", "k2"])["score"]
    assert net.frame_timbre.campp.cache.hits == 2
    torch.testing.assert_close(first, plain, rtol=0, atol=0)
    torch.testing.assert_close(second, plain, rtol=0, atol=0)
