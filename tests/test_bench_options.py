"""The runner's options for CMI-RewardBench users: subset=, stage=, preset=upstream, custom
models taking paths or gradients, per-item details, decoding while the model loads, and the
default audioscore checkpoint `make demo` writes."""

from __future__ import annotations

import ast
import json
import logging
import multiprocessing
from pathlib import Path

import pytest
from helpers.bench import (
    SR,
    JudgeLikeReward,
    PathsReward,
    SignalStatsReward,
    make_cfg,
    make_toy_bench,
)
from hydra import compose, initialize_config_dir

from audiobase.preprocess import Preprocess
from bench.guard import RunRefused
from bench.models import fingerprint, prepare_model_cfg
from bench.run import run, run_cli

ROOT = Path(__file__).parents[1]
CONF = str(ROOT / "conf" / "bench")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyopts")
    make_toy_bench(root)
    return root


def results(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def compose_bench(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("bench", overrides=list(overrides))


# ---------------------------------------------------------------- subset= and stage=


def test_subset_takes_upstream_names_one_or_several(toy, tmp_path):
    _, one = run(make_cfg(toy, tmp_path / "one", subset="CMI-Pref"))
    rows = results(tmp_path / "one" / "signal_stats" / "toy")
    assert {r["benchmark_dataset"] for r in rows} == {"CMI-Pref"} and len(rows) == 8
    meta = json.loads((tmp_path / "one" / "signal_stats" / "toy" / "metadata.json").read_text())
    assert meta["subset"] == "CMI-Pref"  # upstream's metadata.json names it as its --subset
    run(make_cfg(toy, tmp_path / "two", subset=["PAM", "MusicArena"]))
    two = results(tmp_path / "two" / "signal_stats" / "toy")
    assert {r["benchmark_dataset"] for r in two} == {"PAM", "MusicArena"}
    run(make_cfg(toy, tmp_path / "all", subset="all"))
    assert len(results(tmp_path / "all" / "signal_stats" / "toy")) == 33


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"subset": "Pam"}, r"unknown \['Pam'\]"),
        ({"subset": ["all", "PAM"]}, "cannot be combined"),
        ({"dataset.subsets": ["PAM"]}, "top-level `subset=`"),
        ({"stage": "scoring"}, "stage must be one of"),
    ],
)
def test_bad_subset_or_stage_is_refused_with_the_reason(toy, tmp_path, over, match, caplog):
    cfg = make_cfg(toy, tmp_path, **over)
    assert run_cli(cfg) == RunRefused.exit_code
    with pytest.raises(RunRefused, match=match):
        run(cfg)


def test_score_then_evaluate_equals_all(toy, tmp_path):
    all_metrics, _ = run(make_cfg(toy, tmp_path / "all"))
    cfg = make_cfg(toy, tmp_path / "split", stage="score", max_fail_frac=1.0)
    metrics, info = run(cfg)
    out = tmp_path / "split" / "signal_stats" / "toy"
    assert metrics == {} and len(results(out)) == 33 and not (out / "metrics.json").exists()
    assert run_cli(cfg) == 0  # nothing left to score; reports without metrics
    # evaluate only: the model is not built (this config could not build one)
    ev = make_cfg(toy, tmp_path / "split", stage="evaluate")
    ev.model._target_ = "no_such_module.NoModel"
    metrics, info = run(ev)
    assert metrics["summary"] == all_metrics["summary"] and info["total_rows"] == 33
    assert (out / "metrics.json").is_file() and (out / "summary.md").is_file()
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["run"]["scored_rows"] == 2  # the last scoring run's entry (the retry) is kept


def test_evaluate_without_results_is_refused(toy, tmp_path):
    with pytest.raises(RunRefused, match="no results to evaluate"):
        run(make_cfg(toy, tmp_path, stage="evaluate"))


# ---------------------------------------------------------------- preset=upstream


def test_preset_upstream_sets_upstream_settings():
    cfg = compose_bench("preset=upstream", "model=cmi_rm_tiny")
    assert (cfg.batching, cfg.batch_size, cfg.max_dur) == ("upstream", 12, 120.0)
    assert prepare_model_cfg(cfg).upstream_compat is True
    default = compose_bench("model=cmi_rm_tiny")
    assert default.batching == "duration" and prepare_model_cfg(default).upstream_compat is False
    other = compose_bench("preset=upstream", "model=signal_stats")  # no such key: unaffected
    assert "upstream_compat" not in prepare_model_cfg(other)
    assert prepare_model_cfg(other) == prepare_model_cfg(compose_bench("model=signal_stats"))


def cmi_overrides(toy: Path, ckpt: Path, out: Path) -> list[str]:
    return [
        "model=cmi_rm_tiny",
        f"model.checkpoint={ckpt}",
        f"dataset.jsonl={toy / 'bench.jsonl'}",
        f"dataset.root={toy}",
        "dataset.name=toy",
        f"output_root={out}",
        "subset=CMI-Pref",  # pairs with and without a reference: batch-mates matter upstream
        "end_idx=4",  # two without a reference, then two with one
        "num_workers=0",
        "n_boot=0",
        "plots=false",
    ]


def test_preset_upstream_reproduces_the_explicit_upstream_run(toy, tmp_path, one_thread):
    ckpt = tmp_path / "cmi_rm_tiny"
    base = [*cmi_overrides(toy, ckpt, tmp_path / "preset"), "preset=upstream"]
    run(compose_bench(*base))
    explicit = cmi_overrides(toy, ckpt, tmp_path / "explicit")
    explicit += ["batching=upstream", "model.upstream_compat=true", "batch_size=12"]
    run(compose_bench(*explicit, "max_dur=120"))
    run(compose_bench(*cmi_overrides(toy, ckpt, tmp_path / "default")))
    keys = ("predicted_musicality", "predicted_musicality_b", "predicted_text-music alignment")
    scores = {
        name: [[r[k] for k in keys] for r in results(tmp_path / name / "cmi_rm_tiny" / "toy")]
        for name in ("preset", "explicit", "default")
    }
    assert scores["preset"] == scores["explicit"]
    assert scores["preset"] != scores["default"]  # ref-less clips next to clips with a ref


# ---------------------------------------------------------------- custom models


def test_paths_model_gets_resolved_files_and_reports_unreadable_ones(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, num_workers=2)
    cfg.model = {
        "name": "paths",
        "class_path": "helpers.bench:PathsReward",
        "init_kwargs": {"sr": SR},
        "inputs": "paths",
    }
    PathsReward.seen = []
    _, info = run(cfg)
    audio = [a for a, _ in PathsReward.seen]
    assert all(isinstance(a, str) for a in audio)
    assert str(toy / "human_eval/music/real/1.wav") in audio
    refs = {r for _, r in PathsReward.seen if r is not None}
    assert refs == {str(toy / "cmi-pref/ref/ref0.wav")}  # the ref as a path too
    rows = results(tmp_path / "paths" / "toy")
    bad = {
        r["audio-path"].rsplit("/", 1)[-1]: r["inference_error"]
        for r in rows
        if r["status"] == "error"
    }
    # nothing is decoded by the runner: the model's own load fails, per item, naming the file
    assert "score_error" in bad["corrupt.wav"] and "corrupt.wav" in bad["corrupt.wav"]
    assert "nope.wav" in bad["nope.wav"] and info["failed_rows"] == 2
    ok = next(r for r in rows if r["status"] == "ok")
    assert ok["bench_audio_seconds"] > 0  # probed durations, cropped


def test_grad_true_lets_a_model_use_autograd(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path / "grad", subset="PAM")
    cfg.model = {
        "name": "grad",
        "class_path": "helpers.bench:GradReward",
        "init_kwargs": {"sr": SR},
        "grad": True,
    }
    _, info = run(cfg)
    assert info["failed_rows"] == 0
    cfg.model.grad = False  # the default: inference mode, so backward() fails per clip
    cfg.output_root = str(tmp_path / "nograd")
    _, info = run(cfg)
    assert info["failed_rows"] == 12


def test_details_of_a_detailed_model_land_in_the_record(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, subset=["PAM", "CMI-Pref"])
    run(cfg, model=JudgeLikeReward(sr=SR))
    rows = results(tmp_path / "signal_stats" / "toy")
    pam = next(r for r in rows if r["prompt"] == "pam real 0")
    assert pam["judge_answer"] == "score for pam real 0"
    pair = next(r for r in rows if r["benchmark_dataset"] == "CMI-Pref")
    assert pair["judge_answer_b"] == f"score for {pair['prompt']}"
    bad = next(r for r in rows if r["prompt"] == "pam real 1")  # a failed item keeps its answer
    assert bad["status"] == "error" and bad["judge_answer"] == "score for pam real 1"


# ---------------------------------------------------------------- fixed costs


class WorkersSeen(SignalStatsReward):
    """Remembers how many child processes were running while it was being built."""

    children: list[int] = []

    def __init__(self, **kw):
        type(self).children.append(len(multiprocessing.active_children()))
        super().__init__(**kw)


def test_decoding_starts_while_the_model_is_built(toy, tmp_path, caplog):
    cfg = make_cfg(toy, tmp_path, num_workers=2, subset="PAM")
    cfg.model = {
        "name": "w",
        "class_path": "test_bench_options:WorkersSeen",
        "init_kwargs": {"sr": SR},
    }
    WorkersSeen.children = []
    _, info = run(cfg)
    assert WorkersSeen.children[0] >= 2 and len(info["scored_keys"]) == 12
    assert "decoding restarts" not in caplog.text


class ContractInInit(SignalStatsReward):
    """Sets its own contract when built: its config cannot tell what it will be fed."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.preprocess = Preprocess(sr=self.sr, max_dur=0.5)


def test_decoding_starts_over_when_the_built_model_differs_from_its_config(toy, tmp_path, caplog):
    cfg = make_cfg(toy, tmp_path, num_workers=2, subset="PAM")
    cfg.model = {
        "name": "c",
        "class_path": "test_bench_options:ContractInInit",
        "init_kwargs": {"sr": SR},
    }
    with caplog.at_level(logging.DEBUG, logger="bench.score"):
        _, info = run(cfg)
    assert "decoding restarts" in caplog.text and len(info["scored_keys"]) == 12
    rows = results(tmp_path / "c" / "toy")
    assert max(r["bench_audio_seconds"] for r in rows) == pytest.approx(0.5)  # its contract


# ---------------------------------------------------------------- make demo -> model=audioscore


def demo_plan_a_export() -> str:
    """Where scripts/demo.py exports plan A: its `--out` default / plan_a / export (read from
    the script's source, not imported)."""
    tree = ast.parse((ROOT / "scripts" / "demo.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            if node.args and getattr(node.args[0], "value", None) == "--out":
                out = next(k.value.value for k in node.keywords if k.arg == "default")
    assert '("plan_a", "muq_lora")' in (ROOT / "scripts" / "demo.py").read_text()
    return f"{out}/plan_a/export"


def test_model_audioscore_defaults_to_what_make_demo_exports(monkeypatch):
    monkeypatch.delenv("AUDIOSCORE_CHECKPOINT", raising=False)
    cfg = compose_bench("model=audioscore", "model.max_dur=30")
    assert cfg.model.checkpoint == demo_plan_a_export()
    assert cfg.model.max_dur == 30  # the scorer's own crop (AudioscoreRewardModel kwarg)
    assert cfg.dataset.jsonl == "data/synth/bench.jsonl"  # the demo's corpus, its default


def test_fingerprint_depends_on_the_model_class_file(toy, tmp_path):
    """The code part of the fingerprint: a class from outside the project is keyed on its
    module file's content (here this test file)."""
    cfg = make_cfg(toy, tmp_path)
    pre = Preprocess(sr=SR, max_dur=30.0)
    own = fingerprint(cfg, pre, SignalStatsReward)
    assert own == fingerprint(cfg, pre, SignalStatsReward)
    assert fingerprint(cfg, pre, WorkersSeen) != own
