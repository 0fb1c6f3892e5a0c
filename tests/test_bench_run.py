"""End-to-end runner behaviour: outputs, bad audio, crash + resume, batch fallback, exit status."""

from __future__ import annotations

import gc
import json
import os
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.bench import (
    SR,
    CountingHandler,
    DyingSignalStats,
    ExtraColumnsReward,
    SimulatedKill,
    make_cfg,
    make_toy_bench,
    serve,
)
from helpers.routes import make_tiny_export
from omegaconf import OmegaConf

from audiobase.audio import AudioTooShortError
from audiobase.preprocess import Preprocess
from bench.baselines import SignalStatsReward
from bench.guard import RunRefused
from bench.run import run, run_cli
from rewards.base import ScoreItemError
from rewards.http import HTTPRewardModel

os.environ.setdefault("WANDB_MODE", "offline")
CONF = Path(__file__).parents[1] / "conf" / "bench"
OUTPUTS = [
    "results.jsonl",
    "metrics.json",
    "metrics_summary.csv",
    "metrics_detail.csv",
    "statistics.json",
    "summary.md",
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toybench")
    make_toy_bench(root)
    return root


def read_results(out_dir):
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]


def test_run_writes_outputs_and_records_bad_audio(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, num_workers=2, plots=True)
    metrics, info = run(cfg)  # model built through rewards.build from its `_target_` config
    assert gc.isenabled() and gc.get_freeze_count() == 0  # run() leaves the GC as it found it
    out = tmp_path / "signal_stats" / "toy"
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert list((out / "plots").glob("scatter_PAM_musicality.png"))
    rows = read_results(out)
    assert len(rows) == 33 and info["failed_rows"] == 2
    bad = {r["audio-path"].rsplit("/", 1)[-1]: r for r in rows if r["status"] == "error"}
    assert "AudioMissingError" in bad["nope.wav"]["inference_error"]
    assert "nope.wav" in bad["nope.wav"]["inference_error"]
    assert "AudioDecodeError" in bad["corrupt.wav"]["inference_error"]
    assert bad["corrupt.wav"]["inference_valid_a"] is False
    assert bad["corrupt.wav"]["predicted_musicality"] is None
    pair = next(r for r in rows if r["benchmark_dataset"] == "CMI-Pref")
    assert pair["inference_valid_b"] is True and pair["predicted_musicality_b"] is not None
    want = "model_a" if pair["predicted_musicality"] > pair["predicted_musicality_b"] else "model_b"
    assert pair["predicted_preference-musicality"] == want == pair["predicted_preference"]
    summary = {(r["dataset"], r["task"]): r for r in metrics["summary"]}
    assert summary[("PAM", "musicality")]["SRCC"] > 0.8  # loudness tracks the toy musicality
    assert summary[("MusicEval", "musicality")]["n"] == 5  # the two broken clips are dropped
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["failure_reasons"] == {"AudioMissingError": 1, "AudioDecodeError": 1}
    assert stats["run"]["audio_seconds"] > 0


def test_killed_run_resumes_to_the_same_metrics(toy, tmp_path):
    full, _ = run(make_cfg(toy, tmp_path / "full"))
    cfg = make_cfg(toy, tmp_path / "resumed")
    with pytest.raises(SimulatedKill):  # the same model and config, dying in its third batch
        run(cfg, model=DyingSignalStats(after=2, sr=SR))
    out = tmp_path / "resumed" / "signal_stats" / "toy"
    first = read_results(out)
    assert 0 < len(first) < 33  # at most batch_size clips per batch, two batches written
    assert sum(len([k for k in ("audio-path", "audio2") if k in r]) for r in first) <= 8
    resumed, info = run(cfg)
    assert not {r["bench_row_key"] for r in first} & set(info["scored_keys"])  # nothing twice
    assert info["skipped_rows"] == len(first)
    assert len(first) + len(info["scored_keys"]) == 33
    assert resumed["summary"] == full["summary"]
    assert resumed["detail"] == full["detail"]
    _, again = run(cfg)  # a third run only retries the two failed rows
    assert len(again["scored_keys"]) == 2 and again["skipped_rows"] == 31
    assert len(read_results(out)) == 33  # compacted: one record per row


class PickyReward(SignalStatsReward):
    """Rejects any batch holding the prompt "pam real 1", as a model choking on one clip."""

    calls: list[int]

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        self.calls.append(len(inputs))
        if any(x.text == "pam real 1" for x in inputs):
            raise RuntimeError("model cannot handle this clip")
        return super().score_batch(inputs, batch_size, max_dur, **kw)


def test_failed_batch_is_retried_item_by_item(toy, tmp_path):
    model = PickyReward(sr=SR)
    model.calls = []
    cfg = make_cfg(toy, tmp_path, subset="PAM")
    _, info = run(cfg, model=model)
    rows = read_results(tmp_path / "signal_stats" / "toy")
    bad = [r for r in rows if r["status"] == "error"]
    assert [r["prompt"] for r in bad] == ["pam real 1"]
    assert "score_error: RuntimeError: model cannot handle this clip" in bad[0]["inference_error"]
    assert sum(r["status"] == "ok" for r in rows) == 11  # its batch-mates were scored alone
    assert 1 in model.calls and max(model.calls) == 4


def test_exit_status_reflects_failure_fraction(toy, tmp_path):
    strict = make_cfg(toy, tmp_path / "a", max_fail_frac=0.01, subset=["MusicEval"])
    assert run_cli(strict) == 3  # 2 of 7 MusicEval rows fail
    lenient = make_cfg(toy, tmp_path / "b", max_fail_frac=0.5, subset=["MusicEval"])
    assert run_cli(lenient) == 0


def test_worker_decoding_matches_in_process(toy, tmp_path):
    cfg0 = make_cfg(toy, tmp_path / "w0", num_workers=0, batch_size=1, subset=["MusicArena"])
    cfg2 = make_cfg(toy, tmp_path / "w2", num_workers=2, batch_size=6, subset=["MusicArena"])
    run(cfg0), run(cfg2)
    a = read_results(tmp_path / "w0" / "signal_stats" / "toy")
    b = read_results(tmp_path / "w2" / "signal_stats" / "toy")
    key = "predicted_musicality_b"
    np.testing.assert_allclose([r[key] for r in a], [r[key] for r in b], rtol=1e-6)


def test_two_cpu_ranks_shard_without_overlap(toy, tmp_path):
    single, _ = run(make_cfg(toy, tmp_path / "one"))
    cfg = make_cfg(toy, tmp_path / "two", **{"trainer.devices": 2, "trainer.accelerator": "cpu"})
    sharded, info = run(cfg)
    out = tmp_path / "two" / "signal_stats" / "toy"
    assert not list(out.glob("results.rank*.jsonl"))  # parts merged into results.jsonl
    assert (
        sorted(info["scored_keys"]) == sorted({*info["scored_keys"]})
        and len(info["scored_keys"]) == 33
    )
    a = {r["bench_row_key"]: r for r in read_results(tmp_path / "one" / "signal_stats" / "toy")}
    b = {r["bench_row_key"]: r for r in read_results(out)}
    assert a.keys() == b.keys()
    assert all(a[k]["predicted_musicality"] == b[k]["predicted_musicality"] for k in a)
    assert sharded["summary"] == single["summary"]
    _, retry = run(cfg)  # the two failed rows: one batch, so one rank idles
    assert len(retry["scored_keys"]) == 2 and retry["skipped_rows"] == 31


def test_changed_model_or_dataset_row_is_not_reused(tmp_path):
    root = tmp_path / "data"
    path = make_toy_bench(root, corrupt=False, missing=False)
    cfg = make_cfg(root, tmp_path / "out", subset="PAM")
    _, first = run(cfg)
    assert len(first["scored_keys"]) == 12
    _, same = run(cfg)
    assert same["scored_keys"] == [] and same["skipped_rows"] == 12
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["musicality"] = 1.0  # an edited row gets a new key: scored again, old record dropped
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, edited = run(cfg)
    assert len(edited["scored_keys"]) == 1
    out = read_results(tmp_path / "out" / "signal_stats" / "toy")
    assert len(out) == 12 and out[0]["musicality"] == 1.0
    cfg.model.n_fft = 512  # another model setting: nothing reused, nothing stale kept
    _, other = run(cfg)
    assert len(other["scored_keys"]) == 12
    assert (
        len(
            {
                r["bench_fingerprint"]
                for r in read_results(tmp_path / "out" / "signal_stats" / "toy")
            }
        )
        == 1
    )


class RecordingReward(SignalStatsReward):
    """Remembers which clips each score_batch call saw."""

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        self.calls.append([(x.text, len(x.audio)) for x in inputs])
        return super().score_batch(inputs, batch_size, max_dur, **kw)


def test_upstream_batching_reproduces_cmi_rewardbench_calls(tmp_path):
    root = tmp_path / "data"
    path = make_toy_bench(root, corrupt=False, missing=False)
    model = RecordingReward(sr=SR)
    model.calls = []
    cfg = make_cfg(root, tmp_path / "out", batching="upstream", batch_size=3, num_workers=2)
    run(cfg, model=model)
    # upstream: per subset in file order, chunks of 3 rows; side A of a chunk, then its side B
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows = [r for r in rows if r["split"] == "test" and r["source"] != "other"]
    want = []
    for source in ("PAM", "MusicEval", "Music Arena", "cmi-arena"):
        part = [r for r in rows if r["source"].startswith(source)]
        for i in range(0, len(part), 3):
            want.append([r["prompt"] for r in part[i : i + 3]])
            if "audio2" in part[i]:
                want.append([r["prompt"] for r in part[i : i + 3]])
    assert [[text for text, _ in call] for call in model.calls] == want
    a_len, b_len = model.calls[-2][0][1], model.calls[-1][0][1]
    assert a_len != b_len  # the two calls of a pair chunk hold different clips (A, then B)


class ContractReward(SignalStatsReward):
    """The baseline with its own preprocessing contract, as an exported scorer has one."""

    def __init__(self, max_dur: float, **kw):
        super().__init__(**kw)
        self.preprocess = Preprocess(sr=self.sr, max_dur=max_dur)


def test_a_model_contract_decides_its_input_and_the_fingerprint(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, subset="PAM")
    _, first = run(cfg, model=ContractReward(max_dur=1.0, sr=SR))
    assert len(first["scored_keys"]) == 12
    cfg.max_dur = 10.0  # the runner's crop does not apply to a model with its own contract
    _, same = run(cfg, model=ContractReward(max_dur=1.0, sr=SR))
    assert same["scored_keys"] == [] and same["skipped_rows"] == 12
    _, shorter = run(cfg, model=ContractReward(max_dur=0.5, sr=SR))  # a new contract: rescored
    assert len(shorter["scored_keys"]) == 12
    rows = read_results(tmp_path / "signal_stats" / "toy")
    assert max(r["bench_audio_seconds"] for r in rows) == pytest.approx(0.5)


def test_baseline_prepares_audio_through_the_contract():
    model = SignalStatsReward(sr=SR, n_fft=1024)
    long = np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32)
    assert model.load(long, max_dur=1.0).shape == (SR,)  # the first max_dur seconds
    with pytest.raises(AudioTooShortError):
        model.score_batch([long[:500]], batch_size=1, max_dur=30.0)


def test_audioscore_export_keeps_its_contract_unless_model_max_dur_is_set(toy, tmp_path):
    export = make_tiny_export(tmp_path, Preprocess(sr=24_000, max_dur=1.0, crop="center"))
    cfg = make_cfg(toy, tmp_path / "out", subset="PAM")
    cfg.model = OmegaConf.load(CONF / "model" / "audioscore.yaml")
    cfg.model.checkpoint = str(export)
    _, first = run(cfg)
    assert len(first["scored_keys"]) == 12
    cfg.max_dur = 0.3  # the runner's crop: not this model's
    _, same = run(cfg)
    assert same["scored_keys"] == []
    cfg.model.max_dur = 0.5  # the user's override for this model: a new contract, rescored
    _, shorter = run(cfg)
    assert len(shorter["scored_keys"]) == 12
    rows = read_results(tmp_path / "out" / "audioscore" / "toy")
    assert max(r["bench_audio_seconds"] for r in rows) == pytest.approx(0.5)


def test_http_model_sends_each_clip_once_when_one_clip_of_a_batch_fails(toy, tmp_path):
    """The runner takes the HTTP model's per-item results: a clip the service rejects fails
    alone, its batch-mates are not sent again (counted server-side)."""
    handler = type(
        "Counting",
        (CountingHandler,),
        {"counts": Counter(), "count_lock": threading.Lock(), "reject": ("pam real 1",)},
    )
    server, url = serve(SignalStatsReward(sr=SR), handler)
    try:
        cfg = make_cfg(toy, tmp_path, subset="PAM")
        model = HTTPRewardModel(url, sr=SR, max_retries=2, backoff_base=0.01)
        _, info = run(cfg, model=model)
    finally:
        server.shutdown()
        server.server_close()
    rows = read_results(tmp_path / "signal_stats" / "toy")
    bad = [r for r in rows if r["status"] == "error"]
    assert [r["prompt"] for r in bad] == ["pam real 1"] and info["failed_rows"] == 1
    assert "HTTP 400" in bad[0]["inference_error"]
    assert len(handler.counts) == 12 and max(handler.counts.values()) == 1  # once per clip


class PathlessErrorReward(SignalStatsReward):
    """Rejects the clip with prompt "pam real 1" with a ScoreItemError (as CMI-RM does)."""

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        for i, x in enumerate(inputs):
            if x.text == "pam real 1":
                raise ScoreItemError(i, x, "cannot score this clip")
        return super().score_batch(inputs, batch_size, max_dur, **kw)


def test_score_errors_name_the_file_not_waveform(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, subset="PAM")
    run(cfg, model=PathlessErrorReward(sr=SR))
    bad = [r for r in read_results(tmp_path / "signal_stats" / "toy") if r["status"] == "error"]
    err = bad[0]["inference_error"]
    assert "<waveform>" not in err and str(toy / "human_eval/music/real/1.wav") in err, err
    stats = json.loads((tmp_path / "signal_stats" / "toy" / "statistics.json").read_text())
    assert stats["failure_reasons"] == {"score_error: ScoreItemError": 1}  # counted by kind


def test_empty_selection_is_refused(toy, tmp_path, caplog):
    cfg = make_cfg(toy, tmp_path, start_idx=500)
    assert run_cli(cfg) == RunRefused.exit_code
    assert "no rows selected" in caplog.text and "bench.jsonl" in caplog.text
    cfg = make_cfg(toy, tmp_path, **{"dataset.split": "validation"})
    with pytest.raises(RunRefused, match=r"35 dropped by split='validation'"):
        run(cfg)


def test_dropped_rows_are_counted_in_statistics(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, subset=["PAM", "MusicEval"])
    run(cfg)
    stats = json.loads((tmp_path / "signal_stats" / "toy" / "statistics.json").read_text())
    sel = stats["run"]["selection"]
    assert sel == {
        "lines": 35,
        "dropped_split": 1,
        "dropped_source": 1,
        "dropped_subsets": 14,
        "dropped_slice": 0,
        "selected": 19,
    }


def test_extra_columns_become_predicted_fields(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, subset=["PAM", "CMI-Pref"])
    run(cfg, model=ExtraColumnsReward(sr=SR))
    rows = read_results(tmp_path / "signal_stats" / "toy")
    pam = next(r for r in rows if r["benchmark_dataset"] == "PAM")
    assert pam["predicted_loudness"] == pam["predicted_musicality"]
    assert pam["predicted_half"] == pytest.approx(pam["predicted_musicality"] / 2)
    assert "predicted_loudness_b" not in pam
    pair = next(r for r in rows if r["benchmark_dataset"] == "CMI-Pref")
    assert pair["predicted_half_b"] == pytest.approx(pair["predicted_musicality_b"] / 2)
    run(make_cfg(toy, tmp_path / "plain", subset="PAM"))
    plain = read_results(tmp_path / "plain" / "signal_stats" / "toy")
    assert not [k for k in plain[0] if k.startswith("predicted_loud")]  # others unchanged


def test_score_batch_detailed_keeps_extra_columns_when_falling_back_per_item():
    class Picky(ExtraColumnsReward):
        def score_batch(self, inputs, batch_size, max_dur, **kw):
            if len(inputs) > 1 and any(torch.as_tensor(x).abs().max() == 0 for x in inputs):
                raise ValueError("a silent clip in the batch")
            if torch.as_tensor(inputs[0]).abs().max() == 0:
                raise ValueError("silent")
            return super().score_batch(inputs, batch_size, max_dur, **kw)

    xs = [0.3 * torch.randn(SR), torch.zeros(SR)]
    scores, errors = Picky(sr=SR).score_batch_detailed(xs, 2, 30.0)
    assert scores.shape == (2, 4) and np.isfinite(scores[0]).all() and np.isnan(scores[1]).all()
    assert errors[0] is None and "silent" in errors[1]


def test_weights_under_a_subfolder_count_for_the_fingerprint(tmp_path):
    """A checkpoint folder that keeps its weights one level down (SongEval's `ckpt/`): replacing
    them must change what resume compares, or stale scores would be reused."""
    from bench.models import weights_digest

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "config.yaml").write_text("a: 1\n")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(b"old")
    old = weights_digest(tmp_path)
    weights.write_bytes(b"new")
    assert weights_digest(tmp_path) != old
