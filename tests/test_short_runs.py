"""Runs shorter than an epoch: `trainer.max_steps` mid-epoch still validates the last step and
leaves a best checkpoint and an export."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.train import make_cfg

from audiobase.muq import build_tiny_muq_dir
from audioscore.models.components.muq_encoder import MuQEncoder
from audioscore.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_run_stopped_mid_epoch_validates_and_keeps_a_best_checkpoint(
    tmp_path, synth_corpus, recwarn, caplog
):
    cfg = make_cfg(
        tmp_path, synth_corpus, "data.steps_per_epoch=20", "trainer.max_steps=2", "export=true"
    )
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 2  # stopped inside the first epoch
    assert "val/srcc" in metrics
    best = objects["best_ckpt"]
    assert best and Path(best).is_file()
    assert (Path(objects["export_dir"]) / "config.yaml").is_file()
    # a normal run is quiet: no third-party deprecation noise, no advertisement
    noise = [str(w.message) for w in recwarn if "LeafSpec" in str(w.message)]
    noise += [str(w.message) for w in recwarn if "in eval mode at the start" in str(w.message)]
    assert not noise, noise
    assert "Tip:" not in caplog.text


def test_loading_a_local_muq_prints_nothing(tmp_path, capfd):
    """huggingface_hub's mixin prints a line on every local load (three for CMI-RM)."""
    tiny = build_tiny_muq_dir(tmp_path / "muq")
    capfd.readouterr()
    MuQEncoder(pretrained=str(tiny), layer=1)
    assert "Loading weights" not in capfd.readouterr().out
