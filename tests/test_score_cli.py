"""`python -m audioscore.score EXPORT FILES_OR_DIRS... [--out scores.csv] [--raw]`: folders
walked, CSV `path,score,raw_score,error` printed and written, a bad file gets its error row."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest
import torch
import yaml
from helpers.train import net_config
from hydra.utils import instantiate

from audiobase.audio import save_audio
from audiobase.muq import build_tiny_muq_dir
from audioscore import score as score_cli
from audioscore.calibrate import IsotonicCalibration, fit_calibration
from audioscore.export import export_scorer, load_scorer


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny plan A export with non-zero LoRA deltas and an isotonic calibration."""
    root = tmp_path_factory.mktemp("cli_export")
    tiny = build_tiny_muq_dir(root / "tiny_muq")
    torch.manual_seed(0)
    net = instantiate(net_config(str(tiny)), _convert_="all")
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1, 40)
    cal = fit_calibration(raw, 75 + 10 * raw + rng.normal(0, 3, 40), source="val")
    return export_scorer(
        net.eval(), root / "export", net_config=net_config(str(tiny)), calibration=cal
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """audio/ with clips at two depths in three formats, a non-audio file and a broken clip."""
    root = tmp_path_factory.mktemp("cli_audio") / "audio"
    rng = np.random.default_rng(1)
    for rel, n in [("a.wav", 30_000), ("sub/b.flac", 36_000), ("sub/deeper/c.wav", 20_000)]:
        save_audio(root / rel, rng.normal(0, 0.1, n).astype(np.float32), 24_000)
    (root / "notes.txt").write_text("not audio, not scored")
    (root / "sub" / "broken.m4a").write_bytes(b"not audio at all")
    return root


def read_table(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_walks_folders_and_writes_the_csv_with_an_error_row(export, folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    missing = str(tmp_path / "missing.wav")
    rc = score_cli.main([str(export), str(folder), missing, "--out", str(out), "--workers", "2"])
    stdout, stderr = capsys.readouterr()
    assert rc == 1  # some files failed; the others scored
    rows = read_table(out.read_text())
    assert read_table(stdout) == rows  # printed and written alike
    assert list(rows[0]) == ["path", "score", "raw_score", "error"]
    names = [r["path"].removeprefix(str(folder) + "/") for r in rows]
    assert names == ["a.wav", "sub/b.flac", "sub/broken.m4a", "sub/deeper/c.wav", missing]
    bad = {r["path"]: r for r in rows if r["error"]}
    assert set(bad) == {str(folder / "sub" / "broken.m4a"), missing}
    assert all(r["score"] == r["raw_score"] == "" for r in bad.values())
    assert "broken.m4a" in stderr and "missing.wav" in stderr
    good = [r for r in rows if not r["error"]]
    scorer = load_scorer(export)
    raw = load_scorer(export, calibrated=False).score([r["path"] for r in good])
    np.testing.assert_allclose([float(r["raw_score"]) for r in good], raw, atol=1e-5)
    calibrated = np.array([float(r["score"]) for r in good])
    np.testing.assert_allclose(calibrated, scorer.calibrate(raw), atol=1e-5)
    assert calibrated.min() > 40 and np.abs(calibrated - raw).min() > 10  # label scale
    assert (np.argsort(calibrated) == np.argsort(raw)).all()


def test_raw_flag_and_plain_file_list(export, folder, capsys):
    files = [str(folder / "a.wav"), str(folder / "sub" / "b.flac")]
    assert score_cli.main([str(export), *files, "--raw", "--workers", "0"]) == 0
    rows = read_table(capsys.readouterr().out)
    assert [r["path"] for r in rows] == files
    assert all(r["score"] == r["raw_score"] and not r["error"] for r in rows)


def test_progress_bar_on_long_lists(export, folder, capsys, monkeypatch):
    monkeypatch.setattr(score_cli, "PROGRESS_MIN_FILES", 2)
    assert score_cli.main([str(export), str(folder / "a.wav"), str(folder / "a.wav")]) == 0
    assert "2/2" in capsys.readouterr().err


def test_nothing_to_score(export, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert score_cli.main([str(export), str(tmp_path / "empty")]) == 1
    assert "no audio files" in capsys.readouterr().err


def test_scores_past_the_calibrated_range_are_reported(export, folder, tmp_path, capsys):
    """A calibration whose top knot is its highest label has no room above it: scores of raw
    values past that knot leave the label range, and the CLI says how many did."""
    edge = IsotonicCalibration(x=(-20.0, -19.0), y=(50.0, 99.0), tail=5.0, lo=50.0, hi=99.0)
    config = yaml.safe_load((export / "config.yaml").read_text())
    config["calibration"] = edge.to_dict()
    narrow = tmp_path / "narrow"
    shutil.copytree(export, narrow)
    (narrow / "config.yaml").write_text(yaml.safe_dump(config))
    files = [str(folder / "a.wav"), str(folder / "sub" / "b.flac")]
    assert score_cli.main([str(narrow), *files, "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert all(float(r["score"]) > 99.0 for r in read_table(captured.out))
    assert "note: 2 score(s) lie outside the label range" in captured.err
    # the export's own calibration keeps its clips inside the range: no note
    assert score_cli.main([str(export), *files, "--workers", "0"]) == 0
    assert "outside the label range" not in capsys.readouterr().err
