"""`audioscore.config.load_config`, the one yaml loader (Hydra compose with the defaults list,
resolvers limited to SAFE_RESOLVERS), and `audiobase.plan.ScoringPlan`, the one batching plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiobase.plan import ScoringPlan
from audiobase.preprocess import Preprocess
from audioscore.config import CONF_ROOT, load_config
from audioscore.safe_config import StoredConfigError


def test_a_yaml_path_composes_its_defaults_from_the_conf_dir(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("defaults:\n  - cmi_rm_tiny\n  - _self_\nname: mine\n")
    cfg = load_config(own, conf_dir=CONF_ROOT / "bench" / "model", values=["extra.k=3"])
    assert cfg.name == "mine" and cfg.tiny is True  # from the defaults list, then its own keys
    assert cfg.extra.k == 3  # values may add keys


def test_a_named_config_composes_with_overrides_and_a_node():
    cfg = load_config("bench", ["model=signal_stats"], conf_dir=CONF_ROOT / "bench", node="model")
    assert cfg.name == "signal_stats"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: x\nk: '${oc.create:{a: 1}}'\n", r"evil\.yaml: refusing k: calls the resolver"),
        ("name: [unclosed\n", r"evil\.yaml: refusing the file: cannot be composed"),
    ],
)
def test_refused_configs_name_the_file(tmp_path, text, match):
    evil = tmp_path / "evil.yaml"
    evil.write_text(text)
    with pytest.raises(StoredConfigError, match=match):
        load_config(evil)


def test_a_missing_yaml_is_refused(tmp_path):
    with pytest.raises(StoredConfigError, match="no such config"):
        load_config(tmp_path / "absent.yaml")


def test_the_plan_batches_by_length_and_pads_with_lengths():
    plan = ScoringPlan(Preprocess(sr=100), batch_size=2)
    wavs = [np.ones(5, np.float32), np.ones(2, np.float32), np.ones(4, np.float32)]
    assert plan.batches([len(w) for w in wavs]) == [[1, 2], [0]]  # shortest first, 2 per batch
    x, lengths = plan.collate([wavs[1], wavs[2]])  # [B, T], [B]
    assert x.shape == (2, 4) and lengths.tolist() == [2, 4]
    assert x[0].tolist() == [1.0, 1.0, 0.0, 0.0]  # zero padding after the clip
    assert x.dtype == torch.float32 and plan.replace(batch_size=5).batches([3, 1]) == [[1, 0]]
