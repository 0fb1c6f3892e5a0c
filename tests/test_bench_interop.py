"""Drop-in for CMI-RewardBench, both ways: our results files for its evaluator, its results
files for ours, and our metrics files in its layout.

The fixtures in tests/data/upstream_eval/ were written by upstream's own `evaluate_results.py`
(see the README there); upstream's code is not needed to run these tests.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.data import BenchRow
from bench.evaluate import NoUsableRows, evaluate_results_file
from bench.evaluate import main as evaluate_main
from bench.records import make_result, to_json_line
from bench.store import ResultWriter, compact, read_results

FIXTURES = Path(__file__).parent / "data" / "upstream_eval"
UPSTREAM_FILES = ("metrics_summary.csv", "metrics_detail.csv", "latex.txt")
UPSTREAM_PAIR_KEYS = (  # what upstream's evaluate_results.py reads from a pair row
    "predicted_preference",
    "predicted_preference-musicality",
    "predicted_preference-alignment",
    "predicted_text-music alignment_b",
    "predicted_musicality_b",
)


# Pearson's r is a BLAS dot product in numpy's corrcoef, which pandas calls: its last bit follows
# the machine's BLAS kernels (upstream's evaluator and ours agree on one machine; the fixtures
# were written on another). Numbers may differ by a few ulps, everything else byte for byte.
ULPS = 1e-14


def same_text(ours: str, theirs: str) -> bool:
    """Equal texts, except numbers (split at commas, spaces, `&` and brackets) that differ by
    a few ulps."""
    a, b = re.split(r"([,\s&\[\]:{}])", ours), re.split(r"([,\s&\[\]:{}])", theirs)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if not math.isclose(fx, fy, rel_tol=ULPS, abs_tol=ULPS):
            return False
    return True


def test_same_text_allows_ulps_only():
    assert same_text("PAM,0.7772699204024975,x\n", "PAM,0.7772699204024979,x\n")
    assert not same_text("PAM,0.7772699204024975,x\n", "PAM,0.7772699204025975,x\n")
    assert not same_text("PAM,0.5,x\n", "PAM,0.5,y\n")
    assert not same_text("PAM,0.5\n", "PAM,0.5,\n")


def strict_json(line: str) -> dict:
    """json.loads that refuses NaN / Infinity, as strict JSON readers do."""

    def refuse(name: str) -> None:
        raise ValueError(f"bare {name} in a results line")

    return json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize("case", ["upstream_rows", "no_alignment", "pam_only"])
def test_evaluate_reproduces_upstream_files_exactly(case, tmp_path):
    out = tmp_path / case  # upstream labels latex.txt's rows with its output folder's name
    metrics = evaluate_results_file(FIXTURES / case / "results.jsonl", out, n_boot=20, plots=False)
    for name in UPSTREAM_FILES:
        ours, theirs = (out / name).read_text("utf-8"), (FIXTURES / case / name).read_text("utf-8")
        assert same_text(ours, theirs), name
    # metrics.json: upstream's keys first, byte for byte; our extras after them
    upstream_json = (FIXTURES / case / "metrics.json").read_text(encoding="utf-8")
    ours = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert list(ours)[:3] == ["config", "summary", "detail"]
    head = {k: ours[k] for k in ("config", "summary", "detail")}
    assert same_text(json.dumps(head, ensure_ascii=False, indent=2), upstream_json)
    assert {"summary_ci", "system_level", "bootstrap"} <= set(metrics)
    # our extras live in their own files
    assert (out / "metrics_ci.csv").read_text().startswith("dataset,task,n,SRCC,SRCC_lo,SRCC_hi")
    assert (out / "metrics_system.csv").is_file() and (out / "summary.md").is_file()


def test_upstream_results_file_is_read_with_its_rows(tmp_path):
    """Upstream's rows have no bench_row_key and may hold bare NaN: all are evaluated."""
    rows = read_results(FIXTURES / "upstream_rows" / "results.jsonl")
    assert len(rows) == 43 and not any("bench_row_key" in r for r in rows)
    assert math.isnan(rows[4]["predicted_text-music alignment"])
    m = evaluate_results_file(
        FIXTURES / "upstream_rows" / "results.jsonl", tmp_path, n_boot=0, plots=False
    )
    n = {(r["dataset"], r["task"]): r["n"] for r in m["summary"]}
    assert n[("PAM", "alignment")] == 8  # 9 test clips, the NaN one dropped
    assert n[("CMI-Pref", "alignment")] == 15  # the pair without alignment dropped
    stats = json.loads((tmp_path / "statistics.json").read_text())
    assert stats["total_rows"] == 43 and stats["failed"] == 0  # status from inference_valid_*


def test_metadata_json_has_upstreams_keys(tmp_path):
    res = tmp_path / "run" / "results.jsonl"
    res.parent.mkdir()
    shutil.copy(FIXTURES / "upstream_rows" / "results.jsonl", res)
    evaluate_results_file(res, n_boot=0, plots=False)
    meta = json.loads((res.parent / "metadata.json").read_text())
    assert list(meta) == [
        *("model", "model_name", "checkpoint", "dataset_jsonl", "dataset_root", "split"),
        *("subset", "device", "batch_size", "max_dur", "model_init_kwargs"),
        *("model_score_kwargs", "model_class_path", "custom_model_init_checkpoint"),
        *("custom_model_init_device", "run_dir", "results_jsonl", "num_rows"),
        *("fail_on_error", "eval_report"),
    ]
    assert meta["num_rows"] == 43 and meta["results_jsonl"] == str(res.resolve())
    report = meta["eval_report"]
    assert report["summary_rows"] == 6 and Path(report["temp_ordered_latex"]).is_file()
    # re-evaluating in an upstream run folder keeps its runner's arguments
    meta |= {"model": "cmi_rm", "batch_size": 12, "fail_on_error": True}
    (res.parent / "metadata.json").write_text(json.dumps(meta))
    evaluate_results_file(res, n_boot=0, plots=False)
    again = json.loads((res.parent / "metadata.json").read_text())
    assert (again["model"], again["batch_size"], again["fail_on_error"]) == ("cmi_rm", 12, True)


def test_metadata_json_from_run_info(tmp_path):
    run_info = {
        "device": "cpu",
        "config": {
            "batch_size": 12,
            "max_dur": 120.0,
            "score_kwargs": {},
            "model": {"name": "cmi_rm_tiny", "_target_": "rewards.cmi_rm.CMIRewardModel"}
            | {"checkpoint": "outputs/models/cmi_rm_tiny", "device": "cpu", "tiny": True},
            "dataset": {"jsonl": "data/synth/bench.jsonl", "root": "data/synth"}
            | {"split": "test", "subsets": None},
        },
    }
    from bench.evaluate import evaluate_rows

    rows = read_results(FIXTURES / "no_alignment" / "results.jsonl")
    evaluate_rows(rows, tmp_path, n_boot=0, plots=False, run_info=run_info)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["model"] == "cmi_rm_tiny" and meta["subset"] == "all"
    assert meta["model_class_path"] == "rewards.cmi_rm.CMIRewardModel"
    assert meta["dataset_jsonl"] == str(Path("data/synth/bench.jsonl").resolve())
    assert meta["model_init_kwargs"]["tiny"] is True and meta["batch_size"] == 12


def test_no_usable_rows_is_an_error_naming_the_file(tmp_path, capsys):
    dataset = tmp_path / "bench.jsonl"  # a dataset file, not results: no predictions
    rows = [json.loads(line) for line in (FIXTURES / "pam_only" / "results.jsonl").open()]
    dataset.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if "predict" not in k}) + "\n" for r in rows)
    )
    with pytest.raises(
        NoUsableRows, match=r"bench.jsonl: no usable result rows: .*without predicted_"
    ):
        evaluate_results_file(dataset, n_boot=0, plots=False)
    assert evaluate_main([str(dataset), "--n-boot", "0"]) == 2
    assert "no usable result rows" in capsys.readouterr().err
    assert not (tmp_path / "metrics_summary.csv").exists()  # no empty tables
    res = FIXTURES / "upstream_rows" / "results.jsonl"
    with pytest.raises(NoUsableRows, match="dropped by split='dev'"):
        evaluate_results_file(res, tmp_path, split="dev", n_boot=0, plots=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert evaluate_main([str(empty)]) == 2
    assert "the file is empty" in capsys.readouterr().err


def pair_row(index: int = 0) -> BenchRow:
    raw = {"source": "cmi-arena-annotation", "split": "test", "audio-path": "a.mp3"}
    raw |= {
        "audio2": "b.mp3",
        "preference-musicality": "model_a",
        "preference-alignment": "model_b",
    }
    return BenchRow(index, f"k{index}", "CMI-Pref", raw, "a.mp3", "b.mp3", None)


def side(musicality: float | None, alignment: float | None = None, **kw) -> dict:
    return {"alignment": alignment, "musicality": musicality, "valid": True, "error": ""} | kw


def test_pair_records_always_carry_upstreams_keys():
    """A model without alignment (upstream's runner drops the key, its evaluator then raises
    KeyError): the key is there, null, so the pair leaves the alignment accuracy."""
    rec = make_result(pair_row(), {"a": side(0.9), "b": side(0.2)}, [], "m")
    assert all(k in rec for k in UPSTREAM_PAIR_KEYS)
    assert rec["predicted_preference-alignment"] is None
    assert rec["predicted_preference"] == rec["predicted_preference-musicality"] == "model_a"
    failed = {"a": side(0.9, 0.1), "b": side(None) | {"valid": False, "error": "x"}}
    rec = make_result(pair_row(), failed, [], "m")
    assert all(rec[k] is None for k in UPSTREAM_PAIR_KEYS)
    nan = make_result(pair_row(), {"a": side(math.nan, 1.0), "b": side(0.2, 2.0)}, [], "m")
    assert nan["predicted_preference"] is None  # NaN never becomes a "model_b" label
    assert nan["predicted_preference-alignment"] == "model_b"


def test_our_runners_records_for_a_model_without_alignment():
    """The no_alignment fixture is our runner's output: strict JSON, every upstream key on
    every pair; upstream's evaluator read it (its outputs are beside it) and so does ours."""
    lines = (FIXTURES / "no_alignment" / "results.jsonl").read_text().splitlines()
    rows = [strict_json(line) for line in lines]
    pairs = [r for r in rows if r.get("audio2")]
    assert pairs and all(k in r for r in pairs for k in UPSTREAM_PAIR_KEYS)
    summary = (FIXTURES / "no_alignment" / "metrics_summary.csv").read_text()
    assert "CMI-Pref,alignment,0,,,,\n" in summary  # no alignment accuracy, not a fake one


def test_results_files_never_hold_bare_nan(tmp_path):
    row = pair_row()
    row.raw["musicality"] = math.nan  # even a NaN in the input row
    rec = make_result(row, {"a": side(np.float32(0.5)), "b": side(0.1)}, [], "m")
    rec["bench_extra"] = [np.float64("inf"), {"x": np.nan}]
    path = tmp_path / "results.jsonl"
    with ResultWriter(path) as w:
        w.write([rec])
    (back,) = [strict_json(line) for line in path.read_text().splitlines()]
    assert back["musicality"] is None and back["bench_extra"] == [None, {"x": None}]
    assert back["predicted_musicality"] == 0.5
    with open(path, "a") as f:  # an old journal line with a bare NaN: compaction cleans it
        f.write(json.dumps(back | {"bench_row_key": "old", "musicality": math.nan}) + "\n")
    assert "NaN" in path.read_text()
    compact(path)
    assert len([strict_json(line) for line in path.read_text().splitlines()]) == 2
    assert to_json_line({"v": float("-inf")}) == '{"v": null}\n'


def test_model_details_are_written_per_side():
    sides = {
        "a": side(0.9, details={"judge_answer": "A", "latency_s": np.float32(1.5)}),
        "b": side(0.2, details={"judge_answer": "B is worse"}),
    }
    rec = make_result(pair_row(), sides, [], "judge")
    assert (rec["judge_answer"], rec["judge_answer_b"]) == ("A", "B is worse")
    assert rec["latency_s"] == 1.5 and rec["latency_s_b"] is None
    assert strict_json(to_json_line(rec))["latency_s"] == 1.5
    single = BenchRow(1, "k1", "PAM", {"source": "PAM", "audio-path": "a.wav"}, "a.wav", None, None)
    rec = make_result(single, {"a": side(0.5, details={"raw": "3/5"})}, [], "judge")
    assert rec["raw"] == "3/5" and "raw_b" not in rec
    clash = {"a": side(0.5, details={"source": "mine"})}
    with pytest.raises(ValueError, match=r"judge: details \['source'\] would overwrite"):
        make_result(single, clash, [], "judge")
