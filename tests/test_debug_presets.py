"""Config presets: CAM++ turns tiny only under debug=tiny (not whenever MuQ gets a
`muq_config`), and `trainer.max_steps` is declared, so it is set without `+`."""

from __future__ import annotations

import pytest
from helpers.train import compose_train


@pytest.mark.parametrize(
    ("experiment", "campp"),
    [("hybrid_campp", "timbre"), ("hybrid_campp_frame", "frame_timbre.campp")],
)
def test_campp_is_tiny_only_under_debug_tiny(experiment, campp):
    def campp_tiny(*overrides: str) -> bool:
        cfg = compose_train(f"experiment={experiment}", *overrides)
        node = cfg.model.net
        for key in campp.split("."):
            node = node[key]
        return bool(node.tiny)

    assert campp_tiny("debug=tiny")
    assert not campp_tiny()
    # a random MuQ of any size (e.g. the real-size preset for profiling) keeps the real CAM++
    assert not campp_tiny("++model.net.encoder.muq_config=tiny")
    assert not campp_tiny("++model.net.encoder.muq_config={}")


def test_campp_tiny_preset_and_plan_a_untouched():
    cfg = compose_train("experiment=hybrid_campp", "campp@model.net.timbre=tiny")
    assert cfg.model.net.timbre.tiny
    plan_a = compose_train("experiment=muq_lora", "debug=tiny")
    assert "timbre" not in plan_a.model.net and "frame_timbre" not in plan_a.model.net


def test_max_steps_without_plus():
    assert compose_train("experiment=muq_lora").trainer.max_steps == -1  # Lightning: no limit
    assert (
        compose_train("experiment=muq_lora", "debug=tiny", "trainer.max_steps=7").trainer.max_steps
        == 7
    )
