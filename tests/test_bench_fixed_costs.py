"""Fixed costs of a run: what importing the runner loads, plots drawn in a child process."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bench.plots
from bench.plot_process import PlotProcess
from bench.plots import draw, draw_forked, make_plots


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


def test_plot_child_imports_no_statistics_library():
    # the plot child (python -m bench.plots) imports while the runner imports torch; it reads
    # rows through bench.columns, so scipy.stats (0.6 s, bench.metrics) stays out of it
    loaded = modules_after_import("bench.plots")
    assert "matplotlib" in loaded
    assert "bench.metrics" not in loaded
    assert "scipy" not in loaded


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


def test_plot_child_answers_then_ends_without_the_interpreter_teardown(tmp_path):
    # the runner waits for the child's exit: tearing matplotlib down took 0.13-0.17 s after the
    # answer; an exit handler the teardown would run shows whether it ran
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"rows": pam_rows(), "out_dir": str(tmp_path / "plots")}))
    code = (
        "import atexit, runpy, sys; atexit.register(print, 'TEARDOWN', flush=True); "
        "sys.argv = ['bench.plots', '0', '1', '0', '1']; "
        "runpy.run_module('bench.plots', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=f"{job}\n", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout.strip().splitlines()[-1])
    assert [p for p in made if p] and all(os.path.isfile(p) for p in made if p)
    assert "TEARDOWN" not in done.stdout


@pytest.mark.parametrize("children", [1, 2])
def test_plot_process_writes_what_make_plots_writes(tmp_path, children):
    rows = pam_rows()
    here = [p.name for p in make_plots(rows, tmp_path / "here")]
    plotter = PlotProcess(children)
    try:
        plotter.submit(rows, tmp_path / "child")
        made = plotter.result()
    finally:
        plotter.close()
    assert [p.name for p in made] == here and here  # same files, same order
    assert all(p.is_file() and p.parent == tmp_path / "child" for p in made)


def test_plot_process_falls_back_when_a_child_dies(tmp_path, caplog):
    plotter = PlotProcess(2)
    plotter.procs[1].kill()
    plotter.procs[1].wait()
    plotter.submit(pam_rows(), tmp_path)
    with caplog.at_level("WARNING"):
        made = plotter.result()
    assert [p.name for p in made] == [p.name for p in make_plots(pam_rows(), tmp_path / "here")]
    assert "plot process failed" in caplog.text
    plotter.close()


def names(made: list) -> list[str | None]:
    return [None if p is None else p.name for p in made]


def test_forked_copies_draw_what_one_process_draws(tmp_path):
    rows = pam_rows()
    here = draw(rows, tmp_path / "here")
    made = draw_forked(rows, tmp_path / "forked", ways=3)
    assert names(made) == names(here) and sum(p is not None for p in here) >= 3
    assert all(p.is_file() for p in made if p is not None)
    assert names(draw_forked(rows, tmp_path / "part", (1, 2), ways=2)) == names(here)[1::2]


def test_a_failing_copy_has_its_share_drawn_here(tmp_path, monkeypatch):
    me, plot_scatter = os.getpid(), bench.plots.plot_scatter

    def only_here(*a, **k):  # fails in the forked copies only
        if os.getpid() != me:
            raise RuntimeError("copy died")
        return plot_scatter(*a, **k)

    monkeypatch.setattr(bench.plots, "plot_scatter", only_here)
    rows = pam_rows()
    made = draw_forked(rows, tmp_path / "forked", ways=2)
    assert names(made) == names(draw(rows, tmp_path / "here"))
    assert all(p.is_file() for p in made if p is not None)


def test_plot_process_unused_is_stopped():
    plotter = PlotProcess(2)
    procs = list(plotter.procs)
    plotter.close()
    assert all(p.returncode is not None for p in procs)
    with pytest.raises(RuntimeError, match="before submit"):
        plotter.result()


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
