"""The closed-form ridge adversary: what it measures, what conditioning removes, what the
reversed gradient does to the features, and its memory bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.train import adversary_config, tiny_module

from audioscore.models.components.grl import RidgeAdversary, unexplained


def ridge(in_dim: int, num_singers: int = 0, timbre_dim: int = 0, **kw) -> RidgeAdversary:
    """A RidgeAdversary with conf/train/adversary/ridge.yaml's settings and `kw` overrides."""
    cfg = {k: v for k, v in adversary_config("ridge", **kw).items() if not k.startswith("_")}
    return RidgeAdversary(in_dim, num_singers, timbre_dim, **cfg)


def singers_and_scores(n: int = 240, singers: int = 6, seed: int = 0):
    """Singer ids, and scores confounded with them (each singer its own level), as in training."""
    g = torch.Generator().manual_seed(seed)
    singer = torch.arange(n) % singers
    score = singer.float() / singers + 0.05 * torch.randn(n, generator=g)
    return singer, score, g


def test_unexplained_is_low_for_decodable_targets_and_high_for_noise():
    singer, score, g = singers_and_scores()
    y = torch.nn.functional.one_hot(singer).float()
    timbre = torch.randn(6, 16, generator=g)[singer]  # a per-singer signature
    decodable = timbre + 0.1 * torch.randn(len(singer), 16, generator=g)
    noise = torch.randn(len(singer), 16, generator=g)
    assert unexplained(decodable, y, None, 0.1) < 0.1
    assert unexplained(noise, y, None, 0.1) > 0.9
    # the probe standardises: shrinking the singer dims does not hide them
    assert unexplained(1e-3 * decodable, y, None, 0.1) < 0.1


def test_conditioning_on_the_score_leaves_only_singer_information_beyond_quality():
    singer, score, g = singers_and_scores()
    y = torch.nn.functional.one_hot(singer).float()
    n = len(singer)
    quality = torch.stack([score, score**2, score**3], 1) + 0.01 * torch.randn(n, 3, generator=g)
    timbre = torch.randn(6, 8, generator=g)[singer] + 0.1 * torch.randn(n, 8, generator=g)
    # quality features identify confounded singers ...
    assert unexplained(quality, y, None, 0.01) < 0.7
    # ... but say nothing once the score is given; a timbre signature still does
    assert unexplained(quality, y, score, 0.01) > 0.95
    assert unexplained(timbre, y, score, 0.1) < 0.2


@pytest.mark.parametrize("condition", [True, False])
def test_reversed_gradient_removes_the_singer_and_conditioning_keeps_quality(condition):
    """Free features [quality | timbre] trained on a quality task + the reversed ridge loss,
    singers partly confounded with quality. The timbre stops identifying singers either way;
    quality survives intact only when the adversary is given the score (without it, quality is
    itself a singer cue and the reversed gradient erodes it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(1)
    n = 240
    singer = torch.arange(n) % 6
    score = 0.5 * singer / 5 + 0.5 * torch.rand(n, generator=g)  # half level, half quality
    quality = score[:, None] + 0.05 * torch.randn(n, 1, generator=g)
    timbre = torch.randn(6, 7, generator=g)[singer] + 0.3 * torch.randn(n, 7, generator=g)

    def train(lambd: float) -> tuple[float, float]:
        feats = torch.nn.Parameter(torch.cat([quality, timbre], 1))  # [N, 8]
        adv = ridge(8, 6, condition=condition).eval()  # eval: fit on the rows given
        adv.grl.lambd = lambd
        opt = torch.optim.Adam([feats], lr=0.05)
        for _ in range(150):
            opt.zero_grad()
            task = ((feats[:, 0] - score) ** 2).mean()  # keep quality in dim 0
            (task + 5.0 * adv(feats, singer, score)).backward()
            opt.step()
        x = feats.detach().numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        acc = float(cross_val_score(clf, x, singer.numpy(), cv=4).mean())
        return acc, float(np.corrcoef(x[:, 0], score.numpy())[0, 1])

    acc, corr = train(0.0)
    assert acc > 0.9 and corr > 0.95  # no reversal: the timbre identifies singers
    acc, corr = train(1.0)
    assert acc < 0.35  # chance is 1/6
    assert corr > 0.95 if condition else corr < 0.9


def test_bank_is_a_ring_buffer_of_the_newest_rows():
    adv = ridge(3, 2, bank=5, condition=False).train()
    for step in range(3):
        x = torch.full((2, 3), float(step))
        adv(x, torch.tensor([0, 1]))
    assert adv.filled == 5
    kept = sorted(adv.bank_x[:, 0].tolist())
    assert kept == [0.0, 1.0, 1.0, 2.0, 2.0]  # the oldest row (step 0) was overwritten
    assert ridge(64, 2).bank_x.shape[0] == 256  # bank: null = max(256, 2 x width)
    assert ridge(300, 2).bank_x.shape[0] == 600
    # regress mode: the targets are speaker embeddings [B, E] instead of singer ids
    emb = torch.randn(6, 4)
    adv = ridge(3, timbre_dim=4, mode="regress", condition=False).train()
    loss = adv(torch.randn(6, 3), emb)
    assert 0.0 <= float(loss) <= 1.0
    with pytest.raises(ValueError, match="scores"):
        ridge(3, 2)(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_ridge_kind_in_the_lightning_module():
    """Loss in [0, 1] from the batch's singers and scores; val accuracy from the bank's probe."""
    torch.manual_seed(0)
    module = tiny_module(adversary_config("ridge", bank=64))
    module.build_adversary(num_singers=3)
    adv = module.adversary
    assert isinstance(adv, RidgeAdversary) and not list(adv.parameters())
    adv.grl.lambd = 0.5
    wav = torch.randn(6, 24_000) * 0.1
    batch = {
        "wav": wav,
        "lengths": torch.full((6,), 24_000),
        "singer": torch.tensor([0, 1, 2, 0, 1, -1]),
        "scores": torch.tensor([1.0, 2.0, 3.0, 1.5, float("nan"), 2.5]),
    }
    module.train()
    out = module(batch)
    loss = module.adversary_loss(out, batch)
    assert 0.0 <= float(loss) <= 1.0
    assert adv.filled == 4  # rows with an unknown singer or score are left out
    loss.backward()
    assert module.net.head.ffd[0].weight.grad.abs().sum() > 0  # the reversed signal arrives
    assert module.adversary.predict(out["pooled"].detach()).shape == (6, 3)


def test_conditioned_adversary_refuses_order_only_training_groups():
    from audioscore.models.scorer_module import check_scores_for_adversary

    class OrderOnly:  # the datamodule's answer for groups without scores
        def score_stats(self):
            raise ValueError("the training groups carry fewer than 2 scores")

    with pytest.raises(ValueError, match="condition=false"):
        check_scores_for_adversary(ridge(4, 2, condition=True), OrderOnly())
    check_scores_for_adversary(ridge(4, 2, condition=False), OrderOnly())
    mlp = tiny_module(adversary_config("mlp"))
    mlp.build_adversary(num_singers=2)
    check_scores_for_adversary(mlp.adversary, OrderOnly())
