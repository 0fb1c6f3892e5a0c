"""The GRL remedy for plan B's timbre branch: a trainable projection of CAM++
(`fusion.ProjectedTimbre`) that the singer adversary also sees (`model.adversary.timbre=true`)."""

from __future__ import annotations

import pytest
import torch
from helpers.train import adversary_config, compose_tiny, tiny_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from audioscore.export import export_scorer, load_scorer
from audioscore.models.components.fusion import ProjectedTimbre


@pytest.fixture
def campp_source(tmp_path):
    from audioscore.models.components.campp import save_random_campp

    path = save_random_campp(
        tmp_path / "campp.bin", embedding_size=16, growth_rate=4, bn_size=2, init_channels=16
    )
    return {"_target_": "audioscore.models.components.campp.CamppEncoder", "source": str(path)}


def batch(n: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"wav": 0.1 * torch.randn(n, 16_000, generator=g), "lengths": torch.full((n,), 16_000)}


def test_adversary_sees_the_projected_timbre_and_its_gradient_reaches_the_projection(
    campp_source,
):
    projected = {
        "_target_": "audioscore.models.components.fusion.ProjectedTimbre",
        "encoder": campp_source,
        "proj_dim": 8,
    }
    module = tiny_module(adversary_config("ridge", timbre=True, bank=16), timbre=projected)
    module.build_adversary(num_singers=2)
    assert module.adversary_dim == module.net.head.pooled_dim  # MuQ part + 8 timbre dims
    module.adversary.grl.lambd = 1.0
    b = {**batch(), "singer": torch.tensor([0, 1, 0, 1]), "scores": torch.tensor([1.0, 2, 3, 4])}
    out = module(b)
    torch.testing.assert_close(module.adversary_input(out), out["pooled"].float())
    module.adversary_loss(out, b).backward()
    proj = module.net.timbre.proj.weight
    assert proj.grad is not None and proj.grad.abs().sum() > 0  # the remedy has a lever
    assert all(p.grad is None for p in module.net.timbre.encoder.parameters())  # CAM++ frozen


def test_default_adversary_keeps_out_the_timbre_dims(campp_source):
    module = tiny_module(adversary_config("ridge", bank=16), timbre=campp_source)
    module.build_adversary(num_singers=2)
    assert module.adversary_dim == module.net.head.pooled_dim - 16


def test_adversary_on_frozen_timbre_dims_is_refused(campp_source):
    module = tiny_module(adversary_config("ridge", timbre=True, bank=16), timbre=campp_source)
    with pytest.raises(ValueError, match="frozen CamppEncoder.*hybrid_campp_proj_grl"):
        module.build_adversary(num_singers=2)


def test_remedy_experiment_composes_builds_and_exports(tmp_path):
    cfg = compose_tiny("hybrid_campp_proj_grl", tmp_path)
    assert cfg.model.adversary.timbre is True and cfg.plan == "B"
    net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    net = instantiate(net_config, _convert_="all").eval()
    assert isinstance(net.timbre, ProjectedTimbre) and net.head.extra_dim == 32
    export = export_scorer(net, tmp_path / "export", net_config=net_config)
    wav = batch(2)["wav"].numpy()
    got = load_scorer(export, calibrated=False).score_prepared(list(wav))
    with torch.no_grad():
        want = net(torch.from_numpy(wav), torch.full((2,), wav.shape[1]))["score"].numpy()
    assert got == pytest.approx(want, abs=1e-4)
