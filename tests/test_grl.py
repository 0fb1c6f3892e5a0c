"""Gradient reversal: DANN schedule, sign of the adversary gradient, GRL experiment logging."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.train import adversary_config, make_cfg, tiny_module

from audioscore.models.components.grl import SingerAdversary, dann_lambda, reverse_grad
from audioscore.train import train

MLP = {"hidden_dim": 8, "dropout": 0.0}  # tiny and deterministic


def test_reverse_grad_is_identity_forward_and_flips_backward():
    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_grad(x, 0.7)
    assert torch.equal(y, x)
    (y * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * torch.arange(4.0).expand(3, 4))


def test_dann_schedule():
    assert dann_lambda(0.0, 0.5, 10.0) == 0.0
    assert dann_lambda(1.0, 0.5, 10.0) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    assert dann_lambda(0.1, 1.0, 10.0) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    values = [dann_lambda(p / 10, 1.0, 10.0) for p in range(11)]
    assert values == sorted(values) and dann_lambda(2.0, 1.0, 10.0) == dann_lambda(1.0, 1.0, 10.0)


def test_adversary_learns_while_features_unlearn():
    """total = task + adv: the adversary descends adv, the features get -lambda x that gradient."""
    torch.manual_seed(0)
    cfg = {k: v for k, v in adversary_config("mlp", **MLP).items() if not k.startswith("_")}
    adv = SingerAdversary(6, num_singers=3, **cfg)
    adv.grl.lambd = 0.25
    pooled = torch.randn(5, 6, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0, 1])
    torch.nn.functional.cross_entropy(adv(pooled), target).backward()
    reversed_grad = pooled.grad.clone()
    adv_grads = [p.grad.clone() for p in adv.parameters()]

    pooled.grad = None
    adv.zero_grad()
    torch.nn.functional.cross_entropy(adv.mlp(pooled), target).backward()  # no GRL
    torch.testing.assert_close(reversed_grad, -0.25 * pooled.grad)
    for g, p in zip(adv_grads, adv.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)  # the adversary itself is not reversed


def test_grl_experiment_logs_adversary_metrics(tmp_path, synth_corpus):
    cfg = make_cfg(tmp_path, synth_corpus, "export=false", experiment="muq_lora_grl")
    metrics, objects = train(cfg)
    model = objects["model"]
    assert model.adversary is not None
    assert model.adversary.out_dim == objects["datamodule"].num_singers == 4
    for key in ("train/adv_loss", "train/grl_lambda", "val/adv_acc", "val/srcc"):
        assert key in metrics
    # lambda follows the yaml's schedule at the last step taken (2 steps planned)
    adv = model.adversary
    assert (adv.max_weight, adv.gamma, adv.weight) == (0.5, 10.0, 5.0)  # adversary/ridge.yaml
    assert metrics["train/grl_lambda"] == pytest.approx(dann_lambda(1 / 2, 0.5, 10.0), rel=1e-4)
    assert 0.0 <= metrics["val/adv_acc"] <= 1.0


def test_regress_mode_targets_the_detached_timbre_embedding(tmp_path):
    """adversary.mode=regress: MSE from the reversed pooled vector to the CAM++ embedding."""
    from audioscore.models.components.campp import save_random_campp

    campp = save_random_campp(
        tmp_path / "campp.bin", embedding_size=16, growth_rate=4, bn_size=2, init_channels=16
    )
    module = tiny_module(
        adversary_config("mlp", mode="regress", **MLP),
        timbre={
            "_target_": "audioscore.models.components.campp.CamppEncoder",
            "source": str(campp),
        },
    )
    module.build_adversary()
    assert module.adversary.mlp[-1].out_features == 16
    module.adversary.grl.lambd = 0.5
    wav = torch.randn(3, 24_000) * 0.1
    batch = {"wav": wav, "lengths": torch.full((3,), 24_000)}
    out = module(batch)
    loss = module.adversary_loss(out, batch)
    # the adversary sees only the MuQ part of `pooled`: the appended CAM++ dims would hand it
    # the answer (its own target) and the reversed gradient would never reach MuQ
    muq_part = out["pooled"][:, : module.net.pooled_dim - 16]
    torch.testing.assert_close(module.adversary_input(out), muq_part)
    expected = torch.nn.functional.mse_loss(module.adversary.mlp(muq_part), out["timbre"])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in module.net.timbre.parameters())  # frozen target
    assert module.net.head.ffd[0].weight.grad.abs().sum() > 0  # reversed signal reaches the head


def mlp_module(**options):
    """A tiny module with an mlp adversary for 3 singers."""
    module = tiny_module(adversary_config("mlp", **{**MLP, **options}))
    module.build_adversary(num_singers=3)
    return module


def test_orthogonal_adversary_never_pushes_along_the_score_direction():
    """orthogonal: the reversed gradient on `pooled` has no component along the score weights."""
    torch.manual_seed(0)
    module = mlp_module(orthogonal=True)
    module.adversary.grl.lambd = 1.0
    pooled = torch.randn(6, module.net.pooled_dim, requires_grad=True)
    x = module.adversary_input({"pooled": pooled})
    w = module.net.head.fc.weight[0].detach()
    torch.testing.assert_close(x @ w, torch.zeros(6), atol=1e-5, rtol=0)
    singer = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.nn.functional.cross_entropy(module.adversary(x), singer).backward()
    torch.testing.assert_close(pooled.grad @ w, torch.zeros(6), atol=1e-6, rtol=0)
    assert pooled.grad.abs().sum() > 0  # the rest of `pooled` still gets the reversed signal


def test_adversary_options_linear_norm_and_own_learning_rate():
    module = mlp_module(hidden_dim=0, norm=True, lr_scale=10.0)
    adv = module.adversary
    assert isinstance(adv.norm, torch.nn.BatchNorm1d) and not adv.norm.affine
    assert [type(m) for m in adv.mlp] == [torch.nn.Linear]  # linear, like the probe
    # standardised input: rescaling `pooled` does not change the (training-mode) logits
    adv.train()
    x = torch.randn(8, module.net.pooled_dim)
    torch.testing.assert_close(adv(x), adv(100.0 * x), atol=1e-4, rtol=1e-4)

    class _Trainer:
        estimated_stepping_batches = 10

    module._trainer = _Trainer()
    module.make_scheduler = None
    opt = module.configure_optimizers()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == [pytest.approx(1e-3), pytest.approx(1e-2)]
    adv_ids = {id(p) for p in adv.parameters()}
    assert {id(p) for p in opt.param_groups[1]["params"]} == adv_ids
    assert not adv_ids & {id(p) for p in opt.param_groups[0]["params"]}


def test_linear_normalised_adversary_survives_checkpoint_reload():
    """As on resume: setup() builds the adversary from the data, then the weights load."""
    module = mlp_module(hidden_dim=0, norm=True)
    module.adversary.norm.running_mean.fill_(0.5)
    state = module.state_dict()
    fresh = mlp_module(hidden_dim=0, norm=True)
    fresh.load_state_dict(state)
    assert fresh.adversary.mlp[-1].out_features == 3
    torch.testing.assert_close(
        fresh.adversary.norm.running_mean, module.adversary.norm.running_mean
    )


def test_adversary_reset_every_epoch_restarts_weights_and_optimizer_state(monkeypatch):
    module = mlp_module(reset_every_epochs=1)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    with torch.no_grad():
        for p in module.adversary.parameters():
            p.fill_(3.0)
    for p in module.parameters():
        opt.state[p] = {"step": torch.tensor(1.0)}

    class _Trainer:
        optimizers = [opt]

    module._trainer = _Trainer()
    monkeypatch.setattr(type(module), "current_epoch", property(lambda self: 1))
    module.on_train_epoch_start()
    assert all(not bool((p == 3.0).all()) for p in module.adversary.parameters())
    assert not any(p in opt.state for p in module.adversary.parameters())
    head = next(module.net.head.parameters())
    assert head in opt.state  # the scorer's own optimizer state is untouched


@pytest.mark.parametrize("kind", ["mlp", "ridge"])
def test_each_step_sets_the_reversal_strength_the_features_receive(kind):
    """`on_train_batch_start` follows the DANN schedule: halfway through training the features
    get -lambda(0.5) x the adversary's gradient (no reversal strength = no signal at all)."""
    torch.manual_seed(0)
    extra = MLP if kind == "mlp" else {"bank": 16}
    module = tiny_module(adversary_config(kind, **extra))
    module.build_adversary(num_singers=3)
    adv = module.adversary

    class _Trainer:
        global_step = 5
        estimated_stepping_batches = 10

    module._trainer = _Trainer()
    assert adv.grl.lambd == 0.0
    module.on_train_batch_start(None, 0)
    expected = dann_lambda(0.5, adv.max_weight, adv.gamma)
    assert expected > 0.1 and module.grl_lambda == pytest.approx(expected)  # what is logged

    adv.eval()  # the same fit both times (the ridge bank stays empty)
    batch = {"singer": torch.tensor([0, 1, 2, 0, 1, 2]), "scores": torch.linspace(1, 2, 6)}
    pooled = torch.randn(6, module.net.pooled_dim)

    def feature_grad() -> torch.Tensor:
        x = pooled.clone().requires_grad_(True)
        module.adversary_loss({"pooled": x}, batch).backward()
        return x.grad

    reversed_grad = feature_grad()
    adv.grl.lambd = -1.0  # the GRL multiplies by -lambda: -1 passes the plain gradient
    plain = feature_grad()
    scale = plain.abs().max()  # the ridge probe's gradients are small: compare relatively
    assert scale > 0
    torch.testing.assert_close(reversed_grad / scale, -expected * plain / scale)
