"""Custom reward models by `module:Class`: duck-typed or RewardModel subclasses, errors, batch independence."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from helpers.bench import make_cfg, make_toy_bench

from bench.run import run
from rewards.base import BatchInput
from rewards.build import build_reward_model
from rewards.custom import CustomModelError

MODULE = textwrap.dedent(
    '''
    import numpy as np
    import torch
    from rewards.base import RewardModel

    class DuckModel:
        """Written for CMI-RewardBench: reads inputs through to_dict(), like its sample adapter."""

        def __init__(self, checkpoint, device="cuda:0", sr=24000, gain=1.0):
            self.checkpoint, self.device, self.sr, self.gain = checkpoint, device, sr, gain

        def score_batch(self, inputs, batch_size, max_dur, **kwargs):
            rows = []
            for x in inputs:
                d = x.to_dict()
                wav = torch.as_tensor(d["audio"])[: int(max_dur * self.sr)]
                rows.append([len(d["text"]) * self.gain, float(wav.abs().mean()) + kwargs.get("offset", 0.0)])
            return np.asarray(rows)

    class SubclassModel(RewardModel):
        def __init__(self, device="cpu"):
            self.device = device

        @property
        def sr(self):
            return 16000

        def score_batch(self, inputs, batch_size, max_dur, **kwargs):
            return np.asarray([[np.nan, float(torch.as_tensor(x.audio).std())] for x in inputs])

    class NoSr:
        def __init__(self, checkpoint=None, device=None):
            pass

        def score_batch(self, inputs, batch_size, max_dur):
            return np.zeros((len(inputs), 2))

    class NoScore:
        sr = 24000

    class ExtraDuck(DuckModel):
        """Names a third score column, as a multi-dimension scorer does."""

        extra_columns = ["energy"]

        def score_batch(self, inputs, batch_size, max_dur, **kwargs):
            base = super().score_batch(inputs, batch_size, max_dur, **kwargs)
            return np.concatenate([base, 2 * base[:, 1:2]], axis=1)

    class ExtraMissing(ExtraDuck):
        extra_columns = ["energy", "missing"]

    class WrongShape(DuckModel):
        def score_batch(self, inputs, batch_size, max_dur, **kwargs):
            return np.zeros((len(inputs), 3))
    '''
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def clips():
    g = torch.Generator().manual_seed(0)
    return [
        BatchInput(torch.randn(int(s * 24000), generator=g), t)
        for s, t in [(1, "a"), (2.5, "bbb"), (0.5, "")]
    ]


def test_duck_typed_class_with_injection_and_score_kwargs(user_module):
    cfg = {
        "name": "mine",
        "class_path": f"{user_module}:DuckModel",
        "checkpoint": "/ckpt/x.safetensors",
        "device": "cpu",
        "init_kwargs": {"gain": 2.0},
        "score_kwargs": {"offset": 10.0},
    }
    model, score_kwargs = build_reward_model(cfg)
    assert score_kwargs == {"offset": 10.0}
    assert model.checkpoint == "/ckpt/x.safetensors" and model.device == "cpu" and model.gain == 2.0
    xs = clips()
    batched = model.score_batch(xs, 3, 30.0, **score_kwargs)
    alone = np.stack([model.score_batch([x], 1, 30.0, **score_kwargs)[0] for x in xs])
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    np.testing.assert_allclose(batched[:, 0], [2.0, 6.0, 0.0])
    assert batched[1, 1] == pytest.approx(float(xs[1].audio.abs().mean()) + 10.0, rel=1e-5)


def test_init_kwargs_override_injected_values(user_module):
    model, _ = build_reward_model(
        {"name": "m", "class_path": f"{user_module}.DuckModel", "checkpoint": "a", "device": "cpu",
         "init_kwargs": {"checkpoint": "b", "device": "cuda:1"}}
    )  # fmt: skip
    assert (model.checkpoint, model.device) == ("b", "cuda:1")


def test_subclass_without_checkpoint_arg(user_module):
    model, _ = build_reward_model(
        {"name": "s", "class_path": f"{user_module}:SubclassModel", "checkpoint": "x"}
    )
    assert model.sr == 16000
    out = model.score_batch(clips(), 2, 30.0)
    assert out.shape == (3, 2) and np.isnan(out[:, 0]).all() and np.isfinite(out[:, 1]).all()


@pytest.mark.parametrize(
    ("class_path", "match"),
    [
        ("no_such_module_xyz:Model", "does not import"),
        ("{m}:Missing", "has no attribute 'Missing'"),
        ("{m}:NoScore", "no callable score_batch"),
        ("{m}:NoSr", "no `sr`"),
        ("{m}", "expected 'package.module:ClassName'"),
        ("{m}:np", "not a class"),
    ],
)
def test_clear_errors(user_module, class_path, match):
    with pytest.raises(CustomModelError, match=match):
        build_reward_model({"name": "bad", "class_path": class_path.format(m=user_module)})


def test_wrong_output_shape_is_reported(user_module):
    model, _ = build_reward_model({"name": "w", "class_path": f"{user_module}:WrongShape"})
    with pytest.raises(CustomModelError, match=r"returned shape \(3, 3\), expected \(3, 2\)"):
        model.score_batch(clips(), 3, 30.0)


def test_unknown_top_level_keys_rejected(user_module):
    with pytest.raises(CustomModelError, match="unknown keys"):
        build_reward_model({"name": "u", "class_path": f"{user_module}:DuckModel", "gain": 3})


def test_custom_model_with_extra_columns_scores_every_row_through_bench_run(user_module, tmp_path):
    """A class_path model naming `extra_columns` returns [N, 3]; bench.run writes the extra
    column for every row (it used to fail each one: "shape (1, 3), expected (1, 2)")."""
    make_toy_bench(tmp_path / "data", corrupt=False, missing=False)
    cfg = make_cfg(tmp_path / "data", tmp_path / "out", subset="PAM")
    cfg.model = {
        "name": "extra",
        "class_path": f"{user_module}:ExtraDuck",
        "init_kwargs": {"sr": 16_000},
        "checkpoint": None,
        "device": "cpu",
    }
    _, info = run(cfg)
    assert info["failed_rows"] == 0 and info["total_rows"] == 12
    lines = (tmp_path / "out" / "extra" / "toy" / "results.jsonl").read_text().splitlines()
    for r in map(json.loads, lines):
        assert r["predicted_energy"] == pytest.approx(2 * r["predicted_musicality"])


def test_extra_columns_not_returned_are_a_shape_error(user_module):
    model, _ = build_reward_model({"name": "x", "class_path": f"{user_module}:ExtraMissing"})
    with pytest.raises(CustomModelError, match=r"expected \(3, 4\) \(2 \+ extra_columns"):
        model.score_batch(clips(), 3, 30.0)
