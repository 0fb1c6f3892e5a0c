"""Benchmark runner: `python -m bench.run model=cmi_rm_tiny dataset=synth`.

Stages, each consuming the previous one's output:
select rows -> score -> compact -> evaluate -> report.
Scores side A and side B of every CMI-RewardBench row, appending result rows per batch to
outputs/bench/<model.name>/<dataset.name>/results.jsonl, then writes the metrics files.
`stage=score` stops before evaluating (upstream's `--no_run_evaluate`); `stage=evaluate`
re-evaluates an existing results.jsonl without building the model. `subset=PAM` (upstream's
names) scores one subset. Rerunning resumes: rows already scored under the same fingerprint
are skipped, failed ones retried; scores of another fingerprint are set aside first
(bench.resume). Decoding starts while the model is built when its config tells what it will
be fed. Several models run one after another as a Hydra multirun:
`python -m bench.run -m model=cmi_rm_tiny,audioscore`.
One run at a time per output folder (bench.guard.OutputLock): a second is refused, naming the
first, so compaction can never drop rows another process is appending.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import threading
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from audiobase.weights import find_user_error
from audioscore.config import load_config
from bench.eval_process import EvalProcess
from bench.guard import OutputLock, RunRefused
from bench.plan import RunPlan
from bench.store import RESULTS, part_files, read_results

# A scoring run's modules (bench.pipeline: torch and the model's code) are imported where a run
# scores, and bench.evaluate (scipy.stats) where `stage=evaluate` evaluates (a scoring run
# evaluates in bench.eval_process's child): `import bench.run` takes 0.3 s without them and
# 2.3 s with them (CPU seconds, median of 3 on the 2-core project machine), and
# `stage=evaluate` never loads torch.

log = logging.getLogger(__name__)


def run(
    cfg: DictConfig, model: Any = None, score_kwargs: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the dataset with one model and write all outputs; returns (metrics, info).

    `model` lets callers pass a built reward model (anything with `sr` + `score_batch`);
    otherwise `cfg.model` goes through rewards.build.build_reward_model. Raises `RunRefused`
    (`OutputBusy`: another run holds the output folder; an empty selection; too little disk).
    """
    plan = RunPlan.from_cfg(cfg)
    if is_launched_rank():  # plain ddp's rank > 0 reruns this script; rank 0 holds the lock
        return run_locked(plan, model, score_kwargs)
    with OutputLock(plan.out):
        return run_locked(plan, model, score_kwargs)


def is_launched_rank() -> bool:
    """A process Lightning's ddp launcher started for rank > 0 (it sets these variables)."""
    return any(int(os.environ.get(v) or 0) > 0 for v in ("LOCAL_RANK", "NODE_RANK"))


def run_locked(
    plan: RunPlan, model: Any = None, score_kwargs: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`run` with the output folder's lock held."""
    plan.prepare_output()
    if plan.stage == "evaluate":
        return evaluate_existing(plan)
    # the evaluation child imports the metrics' and plots' libraries while the model loads and
    # scores (bench.eval_process), at the decoding workers' priority
    evaluator = None
    if plan.stage == "all" and not is_launched_rank():
        evaluator = EvalProcess(nice=int(plan.cfg.get("decode_nice", 0) or 0))
    try:
        from bench.pipeline import score_and_evaluate  # torch and the model's code (see top)

        return score_and_evaluate(plan, model, score_kwargs, evaluator, is_launched_rank())
    finally:
        gc.unfreeze()  # what bench.pipeline.collection_paused froze is collectable again
        if evaluator is not None:
            evaluator.close()


def evaluate_existing(plan: RunPlan) -> tuple[dict[str, Any], dict[str, Any]]:
    """`stage=evaluate`: the metrics of results.jsonl as it is, read once, without building the
    model or scoring anything (statistics.json keeps the scoring run's entry)."""
    out = plan.out
    results = out / RESULTS
    if not results.is_file():
        raise RunRefused(
            f"{results}: no results to evaluate (stage=evaluate); score first with "
            "stage=score or stage=all"
        )
    if part_files(out):
        log.warning("%s: rank part files of an unfinished sharded run are not evaluated", out)
    from bench.evaluate import evaluate_rows, no_usable_rows, usable  # see top

    rows = read_results(results)
    if not usable(rows, plan.split):
        raise RunRefused(no_usable_rows(results, rows, plan.split))
    metrics = evaluate_rows(rows, out, results=results, **plan.metrics)
    info = {"model": str(plan.cfg.model.name), "dataset": str(plan.cfg.dataset.name)}
    return metrics, plan.outcome(rows, [], info)


def report(cfg: DictConfig, metrics: dict[str, Any], info: dict[str, Any]) -> int:
    """Stage 5: print the headline metrics; the exit status (3 = more than `max_fail_frac`
    of the rows failed, else 0)."""
    if not info.get("out_dir"):  # a non-zero ddp rank: rank 0 reports
        return 0
    print(f"{info['out_dir']}: {info['total_rows']} rows, {info['failed_rows']} failed")
    if not metrics:
        print("  not evaluated (stage=score); evaluate later with stage=evaluate")
    for r in metrics.get("summary", []):
        vals = {k: r[k] for k in ("SRCC", "LCC", "K-Tau", "ACC") if k in r}
        print(f"  {r['dataset']:<10} {r['task']:<11} n={r['n']:<5} {vals}")
    if not info["too_many_failures"]:
        return 0
    log.error(
        "%s: %.1f%% of rows failed (max_fail_frac=%s); see statistics.json",
        info["out_dir"],
        100 * info["failed_frac"],
        cfg.get("max_fail_frac"),
    )
    return 3


def run_cli(cfg: DictConfig) -> int:
    """One model's benchmark, reported; returns the exit status (a refused run: its
    `exit_code`, with the reason logged)."""
    try:
        metrics, info = run(cfg)
    except RunRefused as e:
        log.error("%s", e)
        return e.exit_code
    except Exception as e:  # missing weights or package, a bad dataset file: one line, exit 2
        err = find_user_error(e)
        if err is None:
            raise
        if err is e and isinstance(e, ImportError):  # rewards.optional.MissingPackageError
            log.error("%s", e)
        else:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    return report(cfg, metrics, info)


class ExitStatus(Callback):
    """Multirun: exit with the worst job status once every model has run (a job that called
    sys.exit would end the sweep). A job that raised already makes Hydra exit 1."""

    def __init__(self) -> None:
        self.status = 0

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, int):
            self.status = max(self.status, job_return.return_value)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.status:
            sys.exit(self.status)


def run_models(cfg: DictConfig) -> int:
    """`models=[a, b, ...]`: each model composed as `bench.run model=<name>` with this run's
    other overrides, run in turn on the same data; returns the worst exit status."""
    task = HydraConfig.get().overrides.task
    rest = [o for o in task if not o.lstrip("+~").startswith(("models=", "model="))]
    status = 0
    for name in cfg.models:
        one = load_config("bench", [*rest, f"model={name}"])  # in this app's config dir
        status = max(status, run_cli(one))
    return status


@hydra.main(version_base="1.3", config_path="../../conf/bench", config_name="bench")
def main(cfg: DictConfig) -> int:
    status = run_models(cfg) if cfg.get("models") else run_cli(cfg)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return status  # ExitStatus collects it
    # the process ends here: spare the interpreter's last collection over the millions of objects
    # torch and the model's libraries left (about 1 s of a 10 s run on the project machine)
    gc.freeze()
    if status:
        sys.exit(status)
    return status


def leave(status: int = 0) -> None:
    """End the process as a normal exit would (atexit handlers, logging's flush, the standard
    streams flushed), minus the interpreter's teardown: freeing the modules of torch and the
    model's libraries and their C++ registrations takes 0.2-0.3 s after every file is written
    and closed. Returns, leaving the exit to Python, while a non-daemon thread still runs
    (a normal exit waits for it)."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can reach it
            pass
    os._exit(status)


if __name__ == "__main__":
    main()  # a failed run exits inside, with its status
    leave(0)
