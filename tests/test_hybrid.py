"""Plan B: VocalScorer with a CAM++ timbre branch (clip level and frame level)."""

from __future__ import annotations

import functools

import pytest
import torch

from audioscore.models.components.campp import CamppEncoder, save_random_campp
from audioscore.models.components.fusion import FrameFusionEncoder, align_frames
from audioscore.models.components.head import SongEvalHead
from audioscore.models.components.muq_encoder import MuQEncoder, tiny_muq_config
from audioscore.models.components.scorer import VocalScorer

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
    enc = FrameFusionEncoder(tiny_muq(), campp, proj_dim=8)
    assert enc.out_dim == 32 + 8
    net = VocalScorer(enc, tiny_head())
    wav, lengths = batch((0.8, 2.1), seed=1)
    feats, mask = enc(wav, lengths)
    assert feats.shape[-1] == 40 and mask.shape == feats.shape[:2]
    assert mask[0].sum() < mask[1].sum()
    out = net(wav, lengths)
    out["score"].sum().backward()
    assert enc.proj.weight.grad is not None and enc.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in campp.parameters())
    # CAM++ frames of an item are the same alone as padded in the batch (true-length fbank)
    alone = campp.frame_features(wav[:1, : lengths[0]], lengths[:1])[0]
    in_batch = campp.frame_features(wav, lengths)
    torch.testing.assert_close(in_batch[0], alone)
    assert in_batch[0].shape[0] < in_batch[1].shape[0]
    # 50 Hz CAM++ frames: about 2 per MuQ frame
    assert abs(in_batch[1].shape[0] - 2 * int(mask[1].sum())) <= 3


def test_plan_b_config_composes_and_exports(tmp_path):
    """experiment=hybrid_campp debug=tiny: net builds from config, export round-trips CAM++."""
    from pathlib import Path

    import numpy as np
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from audioscore.export import export_scorer, load_scorer, prepare_audio
    from audioscore.models.scorer_module import build_net

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=hybrid_campp",
                "debug=tiny",
                f"paths.data_dir={tmp_path}",
                f"paths.output_dir={tmp_path / 'run'}",
            ],
        )
    assert cfg.plan == "B" and cfg.model.net.timbre.tiny
    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    torch.manual_seed(0)
    net = build_net(net_cfg)
    assert isinstance(net.timbre, CamppEncoder) and net.timbre.out_dim == 32
    assert (tmp_path / "campp_tiny" / "campp_tiny.bin").is_file()
    # perturb the CAM++ BatchNorm so the export must carry these exact weights
    with torch.no_grad():
        net.timbre.model.xvector.dense.nonlinear.batchnorm.running_mean.add_(0.5)
    net.eval()
    out_dir = export_scorer(net, tmp_path / "export")
    rm = load_scorer(out_dir)
    g = torch.Generator().manual_seed(3)
    wavs = [(0.1 * torch.randn(int(1.5 * 24000), generator=g)).numpy() for _ in range(3)]
    got = rm.score_batch(wavs, batch_size=2)
    assert got.shape == (3, 2) and np.isnan(got[:, 0]).all()
    prepared = np.stack([prepare_audio(w, None, rm.preprocess["target_lufs"]) for w in wavs])
    with torch.no_grad():
        x = torch.from_numpy(prepared)
        want = net(x, torch.full((3,), x.shape[1]))["score"].numpy()
    np.testing.assert_allclose(got[:, 1], want, atol=1e-4)
    # the source-free config rebuilds the same encoder from the exported state dict
    from hydra.utils import instantiate

    clone = instantiate(net.timbre.standalone_config())
    clone.load_state_dict(net.timbre.state_dict())
    wav, lengths = batch()
    torch.testing.assert_close(clone(wav, lengths), net.timbre(wav, lengths))
