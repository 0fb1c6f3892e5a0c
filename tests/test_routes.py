"""One file, one score: `python -m audioscore.score`, the reward wrapper, `bench.run
model=audioscore` and `bench.run model=http` against `rewards.serve` give the same files the
same scores, although the benchmark crops at 120 s and the export at 1 s (its own contract)."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.routes import make_tiny_export, write_clips
from hydra import compose, initialize_config_dir

from audiobase.audio import MUQ_MIN_SAMPLES, MUQ_SR
from audiobase.preprocess import Preprocess
from audioscore.score import main as score_main
from bench.infer import model_preprocess
from bench.run import run
from rewards.audioscore_rm import AudioscoreRewardModel
from rewards.http import HTTPRewardModel
from rewards.server import make_server

CONF = str(Path(__file__).resolve().parents[1] / "conf" / "bench")
CONTRACT = Preprocess(
    sr=MUQ_SR, max_dur=1.0, crop="center", target_lufs=-12.0, min_samples=MUQ_MIN_SAMPLES
)
ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A tiny export with a 1 s centre crop, five clips (0.6-2.5 s, wav/flac/ogg/mp3, 16 and
    24 kHz) and a CMI-RewardBench JSONL scoring each once (PAM) plus one pair (CMI-Pref)."""
    root = tmp_path_factory.mktemp("routes")
    export = make_tiny_export(root, CONTRACT)
    clips = write_clips(root / "audio")
    rel = [str(p.relative_to(root)) for p in clips]
    rows = [
        {"source": "PAM (music)", "split": "test", "audio-path": r, "prompt": f"clip {i}",
         "musicality": 1.0 + i, "text-music alignment": 3.0}
        for i, r in enumerate(rel)
    ]  # fmt: skip
    rows.append(
        {"source": "cmi-arena-annotation", "split": "test", "audio-path": rel[1],
         "audio2": rel[4], "prompt": "pair", "preference-musicality": "model_a"}
    )  # fmt: skip
    jsonl = root / "bench.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "export": export, "clips": [str(p) for p in clips], "jsonl": jsonl}


def bench_scores(setup: dict, out: Path, max_dur: float, *model: str) -> dict[str, float]:
    """`bench.run` composed from conf/bench/bench.yaml (max_dur 120 s unless `max_dur` says
    otherwise) -> {file: musicality}; a pair's B side is keyed `<file>#b`."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "bench",
            overrides=[
                *model,
                "dataset.name=routes",
                f"dataset.jsonl={setup['jsonl']}",
                f"dataset.root={setup['root']}",
                f"output_root={out}",
                "device=cpu",
                "num_workers=0",
                "batch_size=3",
                "n_boot=0",
                "plots=false",
                *([] if max_dur == 120.0 else [f"max_dur={max_dur}"]),
            ],
        )
    assert cfg.max_dur == max_dur
    _, info = run(cfg)
    assert info["failed_rows"] == 0
    scores: dict[str, float] = {}
    for line in Path(info["results"]).read_text().splitlines():
        r = json.loads(line)
        scores[str(setup["root"] / r["audio-path"])] = r["predicted_musicality"]
        if r.get("audio2"):
            scores[str(setup["root"] / r["audio2"]) + "#b"] = r["predicted_musicality_b"]
    return scores


def in_order(scores: dict[str, float], clips: list[str]) -> np.ndarray:
    return np.array([scores[c] for c in clips])


@pytest.fixture(scope="module")
def reference(setup) -> np.ndarray:
    """Route (b): the reward wrapper on the file paths."""
    return AudioscoreRewardModel(setup["export"]).score_batch(setup["clips"], 2)[:, 1]


def test_the_export_crop_matters(setup, reference):
    whole = AudioscoreRewardModel(setup["export"], max_dur=120.0).score_batch(setup["clips"], 2)[
        :, 1
    ]
    long = [i for i, c in enumerate(setup["clips"]) if "long" in c]
    assert np.abs(whole[long] - reference[long]).min() > 1e-3  # the benchmark's crop would differ
    assert np.ptp(reference) > 1e-3


def test_score_cli_agrees(setup, reference, capsys):
    assert score_main([str(setup["export"]), *setup["clips"]]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))  # path,score,raw_score,error
    assert [r["path"] for r in rows] == setup["clips"]
    np.testing.assert_allclose([float(r["score"]) for r in rows], reference, atol=ATOL)


# 120 s: the benchmark's default; 1.5 s: shorter than the long clips, so a route that decoded
# the benchmark's first 1.5 s instead of the export's centre 1 s would disagree
BENCH_MAX_DUR = [120.0, 1.5]


@pytest.mark.parametrize("max_dur", BENCH_MAX_DUR)
def test_bench_with_the_export_agrees(setup, reference, tmp_path, max_dur):
    scores = bench_scores(
        setup, tmp_path, max_dur, "model=audioscore", f"model.checkpoint={setup['export']}"
    )
    np.testing.assert_allclose(in_order(scores, setup["clips"]), reference, atol=ATOL)
    assert scores[setup["clips"][4] + "#b"] == pytest.approx(reference[4], abs=ATOL)


@pytest.mark.parametrize("max_dur", BENCH_MAX_DUR)
def test_bench_over_http_agrees(setup, reference, tmp_path, max_dur):
    server = make_server(AudioscoreRewardModel(setup["export"]), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/score"
    try:
        assert model_preprocess(HTTPRewardModel(url), 120.0) == CONTRACT  # decoded as the server
        scores = bench_scores(setup, tmp_path, max_dur, "model=http", f"model.url={url}")
    finally:
        server.shutdown()
        server.server_close()
    np.testing.assert_allclose(in_order(scores, setup["clips"]), reference, atol=ATOL)
    assert scores[setup["clips"][4] + "#b"] == pytest.approx(reference[4], abs=ATOL)
