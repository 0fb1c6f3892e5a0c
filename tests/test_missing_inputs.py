"""The headline commands without data or weights: one line saying what to set or download,
exit 2, no traceback, and no hub request when HF_HUB_OFFLINE is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.train import compose_train
from hydra.utils import instantiate
from omegaconf import open_dict

from audiobase.audio import save_audio
from audiobase.weights import MissingDataError, MissingWeightsError, find_user_error
from audioscore.train import train

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(ROOT / "src"),
        **env,
    }
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The process's single `error:` line; fails on a traceback or a second line."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_train_readme_command_without_data_says_which_keys(tmp_path):
    """`python -m audioscore.train experiment=hybrid_campp trainer.devices=4` as printed."""
    proc = run_cli(
        "-m",
        "audioscore.train",
        "experiment=hybrid_campp",
        "trainer.devices=4",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=ROOT,
    )
    line = one_error_line(proc)
    assert "data.train_files=" in line and "data.val_files=" in line
    assert "scripts/make_synthetic_corpus.py" in line


def test_train_without_muq_weights_offline_names_id_command_and_key(tmp_path, synth_corpus):
    cfg = compose_train(
        "experiment=muq_lora", "data=synth", f"data.root={synth_corpus['root']}", "logger=csv"
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(Exception) as e:
        train(cfg)
    err = find_user_error(e.value)
    assert isinstance(err, MissingWeightsError), e.value
    message = str(err)
    assert "\n" not in message
    assert "huggingface-cli download OpenMuQ/MuQ-large-msd-iter" in message
    assert "model.net.encoder.pretrained=" in message


def test_plan_b_without_campp_weights_offline_names_modelscope_command(
    tmp_path, synth_corpus, monkeypatch
):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    cfg = compose_train(
        "experiment=hybrid_campp",
        "debug=tiny",
        "campp_tiny=false",
        f"data.root={synth_corpus['root']}",
        f"paths.data_dir={tmp_path}",
        "logger=csv",
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(Exception) as e:
        train(cfg)
    err = find_user_error(e.value)
    assert isinstance(err, MissingWeightsError), e.value
    assert "modelscope download --model iic/speech_campplus_sv_zh-cn_16k-common" in str(err)
    assert "model.net.timbre.source=" in str(err)


def test_missing_groups_file_is_a_data_error_naming_the_keys(tmp_path):
    cfg = compose_train("experiment=muq_lora", "debug=tiny", f"data.root={tmp_path}", "logger=csv")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(Exception) as e:
        train(cfg)
    err = find_user_error(e.value)
    assert isinstance(err, MissingDataError), e.value
    assert "train.json" in str(err) and "data.train_files=" in str(err)


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("cmi_rm", "huggingface-cli download HaiwenXia/CMI-RM"),
        ("songeval", "git clone https://github.com/ASLP-lab/SongEval"),
    ],
)
def test_bench_run_without_checkpoint_says_how_to_get_it(tmp_path, synth_corpus, model, needle):
    proc = run_cli(
        "-m",
        "bench.run",
        f"model={model}",
        f"dataset.jsonl={synth_corpus['bench']}",
        f"dataset.root={synth_corpus['root']}",
        f"model.checkpoint={tmp_path / 'absent'}",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    line = one_error_line(proc)
    assert needle in line and "model.checkpoint=" in line


def test_bench_run_without_data_names_the_keys(tmp_path):
    proc = run_cli(
        "-m", "bench.run", "model=cmi_rm_tiny", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path
    )
    line = one_error_line(proc)
    assert "dataset.jsonl=" in line and "make_synthetic_corpus.py" in line


def test_user_groups_files_are_found_whatever_debug_overlay_sets_root(tmp_path, monkeypatch):
    """debug=tiny selects data=synth (root data/synth): a user's relative groups files still
    load from the working directory, and their audio paths from the file's folder."""
    own = tmp_path / "mine"
    (own / "audio").mkdir(parents=True)
    items = []
    for i, score in enumerate((90.0, 70.0, 60.0)):
        wav = (0.1 * np.sin(np.arange(24_000) * (i + 1) / 50)).astype(np.float32)
        save_audio(own / "audio" / f"c{i}.wav", wav, 24_000)
        items.append({"audio_file": f"audio/c{i}.wav", "score": score, "singer": f"s{i}"})
    (own / "groups.json").write_text(json.dumps([items]))
    monkeypatch.chdir(tmp_path)
    cfg = compose_train(
        "experiment=muq_lora",
        "debug=tiny",
        "data.train_files=[mine/groups.json]",
        "data.val_files=[mine/groups.json]",
        "data.failures_path=null",
    )
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    first = datamodule.val_groups[0][0]["audio_file"]
    assert Path(first).resolve() == (own / "audio" / "c0.wav").resolve()
