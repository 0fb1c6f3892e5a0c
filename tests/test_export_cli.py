"""`python -m audioscore.export RUN_DIR [--ckpt best|last|PATH]`: any checkpoint of a finished
run exported as a scorer, built from the run's stored config, calibrated as at the end of
training."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers.train import make_cfg

from audioscore.export import cli as export_cli
from audioscore.export import load_scorer
from audioscore.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, synth_corpus):
    out = tmp_path_factory.mktemp("run")
    _, objects = train(make_cfg(out, synth_corpus, "trainer.max_epochs=2", "export=true"))
    return out, objects


def clips(synth_corpus) -> list[str]:
    return sorted(str(p) for p in (synth_corpus["root"] / "audio").rglob("*.flac"))[:3]


def test_best_checkpoint_exports_like_the_run_itself(run, synth_corpus, capsys):
    out, objects = run
    assert export_cli.main([str(out)]) == 0
    dest = out / f"export_{objects['best_ckpt'].rsplit('/', 1)[-1].removesuffix('.ckpt')}"
    assert f"exported scorer: {dest}" in capsys.readouterr().out
    ours, theirs = load_scorer(dest), load_scorer(objects["export_dir"])
    files = clips(synth_corpus)
    np.testing.assert_allclose(ours.score(files), theirs.score(files), atol=1e-5)
    assert yaml.safe_load((dest / "config.yaml").read_text())["calibration"] is not None


def test_last_and_explicit_checkpoints_export(run, tmp_path, synth_corpus):
    out, _ = run
    assert export_cli.main([str(out), "--ckpt", "last", "--out", str(tmp_path / "l")]) == 0
    path = str(out / "checkpoints" / "last.ckpt")
    assert export_cli.main([str(out), "--ckpt", path, "--out", str(tmp_path / "p")]) == 0
    a = load_scorer(tmp_path / "l", calibrated=False).score(clips(synth_corpus))
    b = load_scorer(tmp_path / "p", calibrated=False).score(clips(synth_corpus))
    np.testing.assert_array_equal(a, b)


def test_not_a_run_folder_or_a_missing_checkpoint_exit_2(run, tmp_path, capsys):
    assert export_cli.main([str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    out, _ = run
    assert export_cli.main([str(out), "--ckpt", str(tmp_path / "nope.ckpt")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err


def test_a_run_config_that_would_build_other_code_is_refused(run, tmp_path, capsys):
    """Attack: a run folder whose stored config names another `_target_` for the net."""
    out, _ = run
    bad = tmp_path / "bad"
    (bad / ".hydra").mkdir(parents=True)
    (bad / "checkpoints").symlink_to(out / "checkpoints")
    cfg = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    cfg["model"]["net"]["_target_"] = "os.system"
    (bad / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert export_cli.main([str(bad), "--ckpt", "last"]) == 2
    assert "os.system" in capsys.readouterr().err
