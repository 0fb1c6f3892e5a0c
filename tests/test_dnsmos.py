"""`model=dnsmos`: DNSMOS P.835 from the speechmos package, checked against speechmos itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.bench import make_cfg, make_toy_bench
from hydra import compose, initialize_config_dir

from audiobase.audio import load_audio
from bench.run import run
from rewards.base import ALIGNMENT, MUSICALITY, ScoreItemError
from rewards.dnsmos import DNSMOS_SR, DNSMOSRewardModel, dnsmos_windows

pytestmark = pytest.mark.usefixtures("one_thread")
speechmos_dnsmos = pytest.importorskip("speechmos.dnsmos")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def voice(seconds: float, sr: int = DNSMOS_SR, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """A buzzy vowel-like tone with some noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 180 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    x = 0.2 * x + noise * rng.standard_normal(t.size)
    return x.astype(np.float32)


def speechmos_scores(wav: np.ndarray) -> np.ndarray:
    r = speechmos_dnsmos.run(wav, DNSMOS_SR)
    return np.array([r["ovrl_mos"], r["sig_mos"], r["bak_mos"]])


@pytest.fixture(scope="module")
def model():
    return DNSMOSRewardModel()


def test_matches_speechmos_run_on_the_same_clips_in_one_batch(model):
    short, longer = voice(2.5, seed=1), voice(11.2, seed=2, noise=0.1)
    out = model.score_batch([short, longer], batch_size=2)
    assert out.shape == (2, 5) and np.isnan(out[:, ALIGNMENT]).all()
    for row, wav in zip(out, (short, longer), strict=True):
        np.testing.assert_allclose(row[2:], speechmos_scores(wav), atol=1e-4)
        assert row[MUSICALITY] == row[2]  # the score is OVRL
    assert model.extra_columns == ["ovrl", "sig", "bak"]


def test_windows_follow_speechmos_repeat_and_hop():
    # 2.5 s is doubled to 5, 10 s: windows every second while 9.01 s fit -> 1
    assert dnsmos_windows(np.ones(int(2.5 * DNSMOS_SR), np.float32)).shape == (1, 144160)
    assert dnsmos_windows(np.ones(int(11.2 * DNSMOS_SR), np.float32)).shape[0] == 2


def test_loud_audio_at_another_rate_is_resampled_and_clipped_not_refused(model, tmp_path):
    wav = voice(3.0, sr=22050, seed=3) * 6.0  # peaks far above full scale
    with pytest.raises(ValueError, match="between -1 and 1"):
        speechmos_dnsmos.run(np.asarray(wav, np.float32), DNSMOS_SR)  # speechmos refuses it
    path = tmp_path / "loud.wav"
    sf.write(path, wav, 22050, subtype="FLOAT")  # float WAV keeps the overs
    got = model.score_batch([str(path)], batch_size=1)[0]
    expected = speechmos_scores(np.clip(load_audio(path, DNSMOS_SR), -1, 1))
    np.testing.assert_allclose(got[2:], expected, atol=1e-4)


def test_empty_waveform_is_an_item_error_naming_it(model):
    with pytest.raises(ScoreItemError, match="item 1"):
        model.score_batch([voice(1.0), np.zeros(0, np.float32)], batch_size=2)


def test_missing_speechmos_is_one_line_with_the_install_command_and_exit_2(tmp_path):
    toy = tmp_path / "toy"
    make_toy_bench(toy, corrupt=False, missing=False)
    code = (
        "import runpy, sys; sys.modules['speechmos'] = None; "
        "sys.argv = ['bench.run'] + sys.argv[1:]; runpy.run_module('bench.run', run_name='__main__')"
    )
    args = [
        "model=dnsmos",
        f"dataset.jsonl={toy / 'bench.jsonl'}",
        f"dataset.root={toy}",
        f"output_root={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [x for x in (p.stdout + p.stderr).splitlines() if "speechmos" in x]
    assert len(lines) == 1 and "pip install 'speechmos==0.0.1.1'" in lines[0]
    assert "Traceback" not in p.stderr


def test_bench_run_model_dnsmos_writes_ovrl_sig_bak(tmp_path):
    toy = tmp_path / "toy"
    make_toy_bench(toy, corrupt=False, missing=False)
    with initialize_config_dir(config_dir=str(CONF / "bench"), version_base="1.3"):
        composed = compose("bench", overrides=["model=dnsmos"])
    cfg = make_cfg(toy, tmp_path / "out", num_workers=0, n_boot=0, device="cpu", end_idx=3)
    cfg.model = composed.model
    _, info = run(cfg)
    assert info["failed_rows"] == 0
    rows = [json.loads(x) for x in Path(info["results"]).read_text().splitlines()]
    row = rows[0]
    direct = DNSMOSRewardModel().score_batch([os.path.join(str(toy), row["audio-path"])], 1)[0]
    assert row["predicted_musicality"] == pytest.approx(direct[MUSICALITY], abs=1e-5)
    assert row["predicted_sig"] == pytest.approx(direct[3], abs=1e-5)
    assert row["predicted_bak"] == pytest.approx(direct[4], abs=1e-5)
