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

import contextlib
import gc
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from audiobase.files import write_json
from audiobase.weights import find_user_error
from audioscore.config import load_config
from bench.data import BenchRow, parse_subset, read_bench_counted
from bench.guard import OutputLock, RunRefused, check_slug
from bench.plot_process import PlotProcess
from bench.resume import part_files, set_aside
from bench.store import compact, read_latest
from rewards.optional import MissingPackageError

if TYPE_CHECKING:
    from bench.score import Prefetch

# The scoring stage's modules (bench.models, bench.infer, bench.score: torch, the model's code)
# are imported inside the functions that score, on purpose: they take seconds to import and
# `stage=evaluate` needs none of them. bench.evaluate (scipy.stats, 0.6 s) is imported where the
# metrics are computed: a model built from transformers has loaded scipy.stats by then.

log = logging.getLogger(__name__)

STAGES = ("score", "evaluate", "all")


def output_dir(cfg: DictConfig) -> Path:
    """<output_root>/<model.name>/<dataset.name>; each name must be one safe path component
    (`bench.guard.check_slug`), else RunRefused."""
    model = check_slug(cfg.model.get("name"), "model.name")
    dataset = check_slug(cfg.dataset.get("name"), "dataset.name")
    return Path(cfg.output_root) / model / dataset


def run_stage(cfg: DictConfig) -> str:
    """`stage`: score (no metrics), evaluate (metrics of the existing results only), all."""
    stage = str(cfg.get("stage") or "all")
    if stage not in STAGES:
        raise RunRefused(f"stage must be one of {STAGES}, got {stage!r}")
    return stage


def prepare_output(cfg: DictConfig) -> Path:
    """The run's folder; unless `resume`, earlier scores in it are forgotten. Call it with the
    folder's lock held."""
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.get("resume", True) and run_stage(cfg) != "evaluate":
        for p in [out / "results.jsonl", *part_files(out)]:
            p.unlink(missing_ok=True)
    return out


def subsets(cfg: DictConfig) -> list[str] | None:
    """The subsets to score (None = all), from `subset` (upstream's `--subset`)."""
    if cfg.dataset.get("subsets") is not None:
        raise RunRefused(
            f"dataset.subsets={list(cfg.dataset.subsets)}: the subsets are chosen with the "
            "top-level `subset=` now (subset=PAM, subset=[PAM,CMI-Pref], subset=all)"
        )
    try:
        return parse_subset(cfg.get("subset", "all"))
    except ValueError as e:
        raise RunRefused(str(e)) from None


def read_dataset(cfg: DictConfig, whole: bool = False) -> list[BenchRow]:
    """The dataset's rows after the split filter; unless `whole`, also subsets and the slice."""
    return read_selection(cfg, whole)[0]


def read_selection(cfg: DictConfig, whole: bool = False) -> tuple[list[BenchRow], dict[str, int]]:
    """`read_dataset` plus how many lines each filter dropped (bench.data.read_bench_counted)."""
    ds = cfg.dataset
    return read_bench_counted(
        ds.jsonl,
        ds.root,
        split=ds.get("split", "test"),
        subsets=None if whole else subsets(cfg),
        start_idx=0 if whole else int(cfg.get("start_idx") or 0),
        end_idx=None if whole else cfg.get("end_idx"),
    )


def select_rows(
    cfg: DictConfig, out: Path, fp: str, quiet: bool = False
) -> tuple[list[BenchRow], int, dict[str, int]]:
    """Stage 1: rows in the selection that still need scoring, how many are already done
    (scored ok under the same fingerprint), and what the filters dropped. An empty selection
    is refused (`RunRefused`): it is a wrong split, subset or slice, not a result."""
    rows, selection = read_selection(cfg)
    dropped = {
        k.removeprefix("dropped_"): n for k, n in selection.items() if k.startswith("dropped")
    }
    if not quiet:
        log.info(
            "%s: %d of %d lines selected; dropped by %s",
            cfg.dataset.jsonl,
            selection["selected"],
            selection["lines"],
            ", ".join(f"{k}: {n}" for k, n in dropped.items()),
        )
    if not rows:
        raise RunRefused(
            f"{cfg.dataset.jsonl}: no rows selected: {selection['lines']} lines, "
            f"{selection['dropped_split']} dropped by split={cfg.dataset.get('split', 'test')!r}, "
            f"{selection['dropped_source']} with a source outside the benchmark, "
            f"{selection['dropped_subsets']} outside subset={cfg.get('subset', 'all')}, "
            f"{selection['dropped_slice']} outside start_idx={cfg.get('start_idx')} "
            f"end_idx={cfg.get('end_idx')}"
        )
    latest = read_latest([out / "results.jsonl", *part_files(out)])
    done = {
        k for k, r in latest.items() if r.get("status") == "ok" and r.get("bench_fingerprint") == fp
    }
    todo = [r for r in rows if r.key not in done]
    return todo, len(rows) - len(todo), selection


def compact_results(cfg: DictConfig, out: Path) -> list[dict[str, Any]]:
    """Stage 3: one record per row in results.jsonl (rank parts merged in). Records of rows no
    longer in the dataset file are dropped; other fingerprints' records were already set aside
    (bench.resume.set_aside) before scoring, so metrics never mix them."""
    keys = {r.key for r in read_dataset(cfg, whole=True)}
    return compact(
        out / "results.jsonl", part_files(out), keep=lambda r: r["bench_row_key"] in keys
    )


def evaluate(
    cfg: DictConfig,
    rows: list[dict[str, Any]],
    out: Path,
    run_info: dict[str, Any] | None,
    plotter: PlotProcess | None = None,
) -> dict[str, Any]:
    """Stage 4: every metrics file for the compacted rows; returns metrics.json's content
    (`run_info` None: statistics.json keeps the scoring run's entry)."""
    from bench.evaluate import evaluate_rows  # scipy.stats: the model's libraries load it first

    return evaluate_rows(
        rows,
        out,
        split=cfg.dataset.get("split", "test"),
        n_boot=int(cfg.get("n_boot", 1000)),
        seed=int(cfg.get("seed", 0)),
        plots=bool(cfg.get("plots", True)),
        run_info=run_info,
        title=f"{cfg.model.name} on {cfg.dataset.name}",
        variant=str(cfg.model.name),
        plotter=plotter,
    )


def describe_run(
    cfg: DictConfig,
    counts: dict[str, Any],
    skipped: int,
    wall: float,
    selection: dict[str, int] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """statistics.json's `run` entry: what this invocation did and how fast (`timings`:
    seconds per stage), and what the split, source, subset and slice filters dropped."""
    from bench.models import n_devices, resolve_device  # scoring stage only (see top)

    return {
        "model": str(cfg.model.name),
        "dataset": str(cfg.dataset.name),
        "device": resolve_device(cfg.get("device", "auto")),
        "devices": n_devices(cfg),
        "scored_rows": counts["ok"] + counts["error"],
        "failed_rows_this_run": counts["error"],
        "skipped_rows": skipped,
        "batches": counts["batches"],
        "audio_seconds": counts["audio_seconds"],
        "wall_s": wall,
        "audio_s_per_s": counts["audio_seconds"] / wall if wall > 0 else 0.0,
        "selection": selection or {},
        "timings": timings or {},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic GC paused while torch and the model's libraries load: imports make
    millions of long-lived objects, which set off full collections (about 0.7 s of a 10 s run
    on the project machine). Objects alive after the block are then frozen (`gc.freeze`), so
    later collections skip them; `run` unfreezes them when it returns."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def prepare_model(
    cfg: DictConfig, model: Any = None, score_kwargs: dict[str, Any] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(the model, the model the scoring stage uses, score kwargs). The model is built before
    the fingerprint, which needs its preprocessing contract (and weights a model writes on
    first use, tiny, count). Sharded ranks build their own on their devices (scoring model
    None), so then this copy stays on the CPU and scores nothing."""
    from bench.models import build_model, extra_score_kwargs, n_devices  # scoring stage only

    scoring_model = model
    if model is None:
        sharded = n_devices(cfg) > 1
        model, score_kwargs = build_model(cfg, device="cpu" if sharded else None)
        scoring_model = None if sharded else model
    return model, scoring_model, {**(score_kwargs or {}), **extra_score_kwargs(cfg)}


def run(
    cfg: DictConfig, model: Any = None, score_kwargs: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the dataset with one model and write all outputs; returns (metrics, info).

    `model` lets callers pass a built reward model (anything with `sr` + `score_batch`);
    otherwise `cfg.model` goes through rewards.build.build_reward_model. Raises `RunRefused`
    (`OutputBusy`: another run holds the output folder; an empty selection; too little disk).
    """
    if is_launched_rank():  # plain ddp's rank > 0 reruns this script; rank 0 holds the lock
        return run_locked(cfg, model, score_kwargs)
    with OutputLock(output_dir(cfg)):
        return run_locked(cfg, model, score_kwargs)


def is_launched_rank() -> bool:
    """A process Lightning's ddp launcher started for rank > 0 (it sets these variables)."""
    return any(int(os.environ.get(v) or 0) > 0 for v in ("LOCAL_RANK", "NODE_RANK"))


def run_locked(
    cfg: DictConfig, model: Any = None, score_kwargs: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`run` with the output folder's lock held."""
    stage = run_stage(cfg)
    out = prepare_output(cfg)
    if stage == "evaluate":
        return evaluate_existing(cfg, out)
    # the plots' child imports matplotlib while the model loads and scores (bench.plot_process)
    draw = stage == "all" and bool(cfg.get("plots", True)) and not is_launched_rank()
    plotter = PlotProcess() if draw else None
    try:
        return score_and_evaluate(cfg, model, score_kwargs, stage, out, plotter)
    finally:
        gc.unfreeze()  # what collection_paused froze is collectable again
        if plotter is not None:
            plotter.close()


def score_and_evaluate(
    cfg: DictConfig,
    model: Any,
    score_kwargs: dict[str, Any] | None,
    stage: str,
    out: Path,
    plotter: PlotProcess | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stages 1-4 of a scoring run (`stage` score or all)."""
    from bench.infer import model_preprocess  # scoring stage only (see top)
    from bench.models import configured_class, digest_sidecar, fingerprint
    from bench.score import score_rows

    t0 = time.perf_counter()
    with collection_paused():
        early = plan_decoding(cfg, out) if model is None else None
        model, scoring_model, score_kwargs = prepare_model(cfg, model, score_kwargs)
    t_model = time.perf_counter()
    pre = model_preprocess(model, cfg.max_dur, cfg.get("max_seconds"))
    fp = fingerprint(cfg, pre, configured_class(cfg), digest_sidecar(cfg))
    if not is_launched_rank():  # plain ddp's rank > 0 only reads; rank 0 owns the files
        set_aside(out, fp)
    todo, skipped, selection = select_rows(cfg, out, fp)
    log.info("%s: %d rows to score, %d already done; model input %s", out, len(todo), skipped, pre)
    t_select = time.perf_counter()
    counts = score_rows(cfg, scoring_model, score_kwargs, todo, pre, out, fp, early)
    if not counts.get("is_global_zero", True):  # plain ddp: every rank gets here, rank 0 reports
        return {}, {"is_global_zero": False}
    rows = compact_results(cfg, out)
    t_score = time.perf_counter()
    timings = {
        "model_s": t_model - t0,
        "select_s": t_select - t_model,
        "score_s": t_score - t_select,
    }
    run_info = describe_run(cfg, counts, skipped, t_score - t0, selection, timings)
    if stage == "all":
        metrics = evaluate(cfg, rows, out, run_info, plotter)
    else:  # stage=evaluate later keeps this run's entry (bench.evaluate reads it back)
        metrics = {}
        write_json(out / "statistics.json", {"run": run_info})
    return metrics, describe_outcome(cfg, rows, counts, run_info, out)


def plan_decoding(cfg: DictConfig, out: Path) -> Prefetch | None:
    """Start decoding before the model is built, when its config tells what it will be fed
    (bench.models.expected_preprocess): the rows still to score under the fingerprint that
    input implies go to the decoding workers, which run while the model loads. The runner
    checks the built model's fingerprint and starts over if it differs. None: no such plan
    (a sharded run, a model whose input only the built model knows)."""
    from bench.models import (
        configured_class,
        digest_sidecar,
        expected_preprocess,
        fingerprint,
        n_devices,
    )
    from bench.score import prefetch  # scoring stage only (see top)

    if n_devices(cfg) > 1:
        return None
    cls = configured_class(cfg)
    pre = expected_preprocess(cfg, cls)
    if pre is None:
        return None
    fp = fingerprint(cfg, pre, cls, digest_sidecar(cfg))
    set_aside(out, fp)
    todo, _, _ = select_rows(cfg, out, fp, quiet=True)
    return prefetch(cfg, todo, pre, fp)


def evaluate_existing(cfg: DictConfig, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """`stage=evaluate`: the metrics of results.jsonl as it is, without building the model or
    scoring anything (bench.evaluate.evaluate_results_file; statistics.json keeps the scoring
    run's entry)."""
    results = out / "results.jsonl"
    if not results.is_file():
        raise RunRefused(
            f"{results}: no results to evaluate (stage=evaluate); score first with "
            "stage=score or stage=all"
        )
    if part_files(out):
        log.warning("%s: rank part files of an unfinished sharded run are not evaluated", out)
    from bench.evaluate import NoUsableRows, evaluate_results_file

    try:
        metrics = evaluate_results_file(
            results,
            out,
            split=cfg.dataset.get("split", "test"),
            n_boot=int(cfg.get("n_boot", 1000)),
            seed=int(cfg.get("seed", 0)),
            plots=bool(cfg.get("plots", True)),
            title=f"{cfg.model.name} on {cfg.dataset.name}",
            variant=str(cfg.model.name),
            lock=False,  # run() holds the folder's lock
        )
    except NoUsableRows as e:
        raise RunRefused(str(e)) from None
    rows = list(read_latest([results]).values())
    info = {"model": str(cfg.model.name), "dataset": str(cfg.dataset.name)}
    return metrics, describe_outcome(cfg, rows, {"scored_keys": []}, info, out)


def describe_outcome(
    cfg: DictConfig,
    rows: list[dict[str, Any]],
    counts: dict[str, Any],
    run_info: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """run()'s info: the run entry plus where the outputs are and how many rows failed."""
    n_fail = sum(r.get("status") == "error" for r in rows)
    info = run_info | {
        "out_dir": str(out),
        "results": str(out / "results.jsonl"),
        "failed_rows": n_fail,
        "total_rows": len(rows),
        "failed_frac": n_fail / max(len(rows), 1),
        "scored_keys": counts["scored_keys"],
    }
    info["too_many_failures"] = info["failed_frac"] > float(cfg.get("max_fail_frac", 1.0))
    return info


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
    except (RunRefused, MissingPackageError) as e:
        log.error("%s", e)
        return e.exit_code
    except Exception as e:  # missing weights, a bad dataset file: one line, exit 2
        err = find_user_error(e)
        if err is None:
            raise
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


if __name__ == "__main__":
    main()
