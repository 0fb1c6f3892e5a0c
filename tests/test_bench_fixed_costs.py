"""Fixed costs of a run: what importing the runner loads, the evaluation in a child process."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bench.plots
from bench.eval_process import EvalProcess
from bench.evaluate import evaluate_rows
from bench.plots import ForkedDrawing, draw, make_plots


def pam_rows(n: int = 30) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "source": "PAM (music)",
            "split": "test",
            "benchmark_dataset": "PAM",
            "musicality": float(g),
            "text-music alignment": float(5 - g),
            "predicted_musicality": float(g + rng.normal()),
            "predicted_text-music alignment": float(-g),
        }
        for g in rng.uniform(1, 5, n)
    ]


def modules_after_import(module: str) -> set[str]:
    """The modules a fresh interpreter holds after `import module`."""
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_runner_import_skips_loudness_and_plotting_libraries():
    # pyloudnorm (scipy.signal) only for a `target_lufs` contract, matplotlib only in the plots
    # child, scipy.stats (bench.metrics) when the metrics are computed
    loaded = modules_after_import("bench.run")
    assert "pyloudnorm" not in loaded
    assert "matplotlib" not in loaded
    assert "scipy.stats" not in loaded  # bench.evaluate: imported when the metrics are computed


def test_scoring_pipeline_starts_decoding_before_importing_the_metrics():
    # bench.pipeline forks the decoding workers (plan_decoding) before the model is built;
    # importing bench.evaluate (scipy.stats, 0.6 s) first would hold them back
    loaded = modules_after_import("bench.pipeline")
    assert "torch" in loaded  # the decoding workers are DataLoader processes
    assert "bench.evaluate" not in loaded
    assert "scipy.stats" not in loaded


def test_cmi_rm_towers_leave_scikit_learn_and_scipy_out():
    # transformers imports scikit-learn (and scipy.stats with it, 0.5 s) when installed, for
    # text generation the towers never run, and scipy.optimize for object-detection losses;
    # the metrics import scipy.stats during scoring
    loaded = modules_after_import("rewards.cmi_rm.towers")
    assert "transformers.generation" in loaded and "muq" in loaded  # the towers' libraries
    assert "transformers.loss.loss_utils" in loaded  # where the detection losses are imported
    assert "sklearn" not in loaded
    assert not any(m == "scipy" or m.startswith("scipy.") for m in loaded)


def test_evaluation_child_imports_the_metrics_and_plots_libraries():
    # the child (python -m bench.eval_child) imports them while the runner imports torch and
    # builds the model, so that the runner's process never does
    loaded = modules_after_import("bench.eval_child")
    assert "matplotlib" in loaded and "scipy.stats" in loaded
    assert "torch" not in loaded


def test_runner_process_leaves_the_metrics_and_plots_libraries_to_the_child():
    loaded = modules_after_import("bench.eval_process")
    assert not {"matplotlib", "scipy", "bench.evaluate", "bench.plots"} & loaded


def test_plots_keep_each_axis_to_a_few_ticks(tmp_path):
    # every tick is artists measured and drawn: the default count (up to 9 per axis) took a
    # third of the drawing time
    fig, ax = bench.plots.plt.subplots(figsize=(4.5, 4))
    ax.scatter(np.linspace(0.0, 97.0, 50), np.linspace(-3.0, 3.0, 50))
    bench.plots.save(fig, tmp_path / "scatter.png")
    assert (tmp_path / "scatter.png").stat().st_size > 0
    for ticks, (lo, hi) in ((ax.get_xticks(), ax.get_xlim()), (ax.get_yticks(), ax.get_ylim())):
        shown = [t for t in ticks if lo <= t <= hi]
        assert 2 <= len(shown) <= 5  # matplotlib's default: 6 on x, 7 on y


EVAL_KW = {"split": "test", "n_boot": 50, "seed": 0, "title": "t", "variant": "v"}


def test_evaluation_child_answers_then_ends_without_the_interpreter_teardown(tmp_path):
    # the runner waits for the child's exit: tearing matplotlib and scipy down took 0.13-0.17 s
    # after the answer; an exit handler the teardown would run shows whether it ran
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"rows": pam_rows(), "out_dir": str(tmp_path), "kwargs": EVAL_KW}))
    code = (
        "import atexit, runpy, sys; atexit.register(print, 'TEARDOWN', flush=True); "
        "sys.argv = ['bench.eval_child', '0', '2']; "
        "runpy.run_module('bench.eval_child', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=f"{job}\n", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["plots"] and all((tmp_path / p).is_file() for p in metrics["plots"])
    assert "TEARDOWN" not in done.stdout


def metrics_files(folder) -> dict[str, str]:
    """Each file's text, with the folder's own path (metadata.json names it) left out."""
    return {
        p.name: p.read_text().replace(str(folder), "OUT")
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_evaluation_process_writes_and_returns_what_evaluate_rows_does(tmp_path):
    rows = pam_rows()
    here = evaluate_rows(rows, tmp_path / "here", **EVAL_KW)
    evaluator = EvalProcess(ways=2)
    try:
        got = evaluator.evaluate(rows, tmp_path / "child", **EVAL_KW)
    finally:
        evaluator.close()
    assert got == here and here["summary"]  # the same metrics, as this process computes them
    assert metrics_files(tmp_path / "child") == metrics_files(tmp_path / "here")
    plots = sorted(p.name for p in (tmp_path / "child" / "plots").iterdir())
    assert plots == sorted(p.name for p in (tmp_path / "here" / "plots").iterdir()) and plots


def test_evaluation_process_evaluates_here_when_its_child_died(tmp_path, caplog):
    evaluator = EvalProcess()
    assert evaluator.proc is not None
    evaluator.proc.kill()
    evaluator.proc.wait()
    with caplog.at_level("WARNING"):
        got = evaluator.evaluate(pam_rows(), tmp_path / "child", **EVAL_KW)
    assert got == evaluate_rows(pam_rows(), tmp_path / "here", **EVAL_KW)
    assert "evaluation process failed" in caplog.text
    assert (tmp_path / "child" / "metrics.json").is_file()
    evaluator.close()


def test_evaluation_error_raises_in_the_runner(tmp_path):
    # the child fails, the evaluation runs here and fails the same way: the caller sees it
    (tmp_path / "out").write_text("a file where the output folder should be")
    evaluator = EvalProcess()
    try:
        with pytest.raises(OSError):
            evaluator.evaluate(pam_rows(), tmp_path / "out", **EVAL_KW)
    finally:
        evaluator.close()


def test_forked_copies_draw_what_one_process_draws(tmp_path):
    rows = pam_rows()
    here = make_plots(rows, tmp_path / "here")
    for ways in (1, 2, 3):
        drawing = ForkedDrawing(ways)
        drawing.submit(rows, tmp_path / f"forked{ways}")
        made = drawing.result()
        assert [p.name for p in made] == [p.name for p in here] and len(here) >= 3
        assert all(p.is_file() and p.parent == tmp_path / f"forked{ways}" for p in made)
    assert [p.name for p in make_plots(rows, tmp_path / "x")] == [p.name for p in here]
    assert [None if p is None else p.name for p in draw(rows, tmp_path / "part", (1, 2))] == [
        None if p is None else p.name for p in draw(rows, tmp_path / "all")
    ][1::2]


def test_a_failing_copy_has_its_share_drawn_here(tmp_path, monkeypatch):
    me, plot_scatter = os.getpid(), bench.plots.plot_scatter

    def only_here(*a, **k):  # fails in the forked copies only
        if os.getpid() != me:
            raise RuntimeError("copy died")
        return plot_scatter(*a, **k)

    monkeypatch.setattr(bench.plots, "plot_scatter", only_here)
    rows = pam_rows()
    drawing = ForkedDrawing(2)
    drawing.submit(rows, tmp_path / "forked")
    made = drawing.result()
    assert [p.name for p in made] == [p.name for p in make_plots(rows, tmp_path / "here")]
    assert all(p.is_file() for p in made)


def test_evaluation_process_unused_is_stopped():
    evaluator = EvalProcess()
    proc = evaluator.proc
    evaluator.close()
    assert proc is not None and proc.returncode is not None
    with pytest.raises(RuntimeError, match="before submit"):
        evaluator.result()


def test_collection_paused_freezes_then_run_restores():
    from bench.infer import worker_start
    from bench.pipeline import collection_paused

    assert gc.isenabled()
    try:
        with collection_paused():
            assert not gc.isenabled()
            gc.disable()
            worker_start(0)  # a decoding worker forked meanwhile collects as usual
            assert gc.isenabled()
            gc.disable()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()


LEAVE = r"""
import atexit, sys, threading
from bench.run import leave
atexit.register(lambda: open(sys.argv[1], "w").write("atexit ran"))
sys.stdout.write("buffered, no newline")
if sys.argv[2] == "thread":
    done = threading.Event()
    t = threading.Thread(target=done.wait)
    t.start()
    leave(3)  # a non-daemon thread runs: returns, Python's exit waits for it
    sys.stdout.write(" | returned")
    done.set()
    sys.exit(4)
leave(3)
sys.stdout.write(" | not reached")
"""


@pytest.mark.parametrize("case", ["plain", "thread"])
def test_leave_runs_exit_handlers_and_flushes_but_waits_for_threads(tmp_path, case):
    mark = tmp_path / "mark.txt"
    src = os.pathsep.join(
        filter(None, [os.path.dirname(bench.plots.__file__) + "/..", os.environ.get("PYTHONPATH")])
    )
    p = subprocess.run(
        [sys.executable, "-c", LEAVE, str(mark), case],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert mark.read_text() == "atexit ran"
    if case == "plain":
        assert (p.returncode, p.stdout) == (3, "buffered, no newline")
    else:
        assert (p.returncode, p.stdout) == (4, "buffered, no newline | returned")
