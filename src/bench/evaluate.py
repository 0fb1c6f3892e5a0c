"""Metrics files from a results.jsonl: `python -m bench.evaluate RESULTS [--out-dir DIR]`.

Reads our runner's results.jsonl or upstream CMI-RewardBench's (`inference_benchmark.py`).
Writes upstream's files in upstream's layout (metrics_summary.csv, metrics_detail.csv,
metrics.json's config/summary/detail, latex.txt, metadata.json) and ours beside them
(metrics_ci.csv, metrics_system.csv, statistics.json, summary.md, plots/*.png; metrics.json's
summary_ci, system_level, bootstrap, n_rows, plots) next to the results (or into --out-dir).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audiobase import schemas as S
from audiobase.files import write_json, write_text
from bench.data import SUBSETS
from bench.guard import OutputLock, RunRefused, print_waiting
from bench.latex import fmt_pct, latex_lines, mean
from bench.metrics import compute_metrics, select_rows
from bench.store import read_results

if TYPE_CHECKING:
    from bench.plots import ForkedDrawing

CI_COLS = ["dataset", "task", "n"]
CI_COLS += [f"{m}{s}" for m in ("SRCC", "LCC", "K-Tau", "ACC") for s in ("", "_lo", "_hi")]
SYSTEM_COLS = ["dataset", "task", "level", "n_systems", "SRCC", "LCC", "K-Tau"]
METADATA_ARGS = [  # upstream's metadata.json keys before run_dir (its runner's arguments)
    "model",
    "model_name",
    "checkpoint",
    "dataset_jsonl",
    "dataset_root",
    "split",
    "subset",
    "device",
    "batch_size",
    "max_dur",
    "model_init_kwargs",
    "model_score_kwargs",
    "model_class_path",
    "custom_model_init_checkpoint",
    "custom_model_init_device",
]


class NoUsableRows(ValueError):
    """A results file with no row to evaluate (the message names the file and why)."""


def frame_csv(rows: Sequence[dict[str, Any]]) -> str:
    """`pandas.DataFrame(rows).to_csv(index=False)`, as upstream writes its tables: columns in
    order of first appearance, None as an empty cell, a lone newline when there are no rows."""
    return to_csv(rows, []) if rows else "\n"


def to_csv(rows: Sequence[dict[str, Any]], first: list[str]) -> str:
    """CSV text; `first` columns lead, any other scalar keys follow in order of appearance."""
    cols = [c for c in first if any(c in r for r in rows)] or list(first)
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and not isinstance(v, dict)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def error_kind(msg: str) -> str:
    """'a: score_error: ValueError: ...' -> 'score_error: ValueError' (for counting reasons)."""
    kinds = []
    for part in str(msg).split(" | "):
        bits = [b.strip() for b in part.split(":")]
        bits = bits[1:] if bits and bits[0] in ("a", "b") else bits
        kinds.append(": ".join(bits[:2]) if bits and bits[0] == "score_error" else bits[0])
    return " | ".join(sorted(set(kinds)))


def compute_statistics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Coverage and failures: counts per subset and status, failure reasons, side validity."""
    per_subset: dict[str, Counter] = {}
    reasons: Counter = Counter()
    for r in rows:
        c = per_subset.setdefault(str(r.get(S.SUBSET, "Unknown")), Counter())
        valid = bool(r.get(S.VALID_A)) and bool(r.get(S.VALID_B, True))
        status = str(r.get(S.STATUS) or ("ok" if valid else "error"))  # upstream's: no status
        c["rows"] += 1
        c[status] += 1
        c["valid_a"] += bool(r.get(S.VALID_A))
        if S.VALID_B in r:
            c["valid_b"] += bool(r[S.VALID_B])
        if status == "error":
            reasons[error_kind(r.get(S.ERROR, ""))] += 1
    n_err = sum(c["error"] for c in per_subset.values())
    return {
        "total_rows": len(rows),
        "successful": len(rows) - n_err,
        "failed": n_err,
        "failure_reasons": dict(reasons.most_common()),
        "per_subset": {k: dict(v) for k, v in sorted(per_subset.items())},
    }


def fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}"


def render_summary_md(metrics: dict, stats: dict, title: str, plots: list[str]) -> str:
    """Human-readable report: headline table with CIs, system level, failures, plots."""
    lines = [f"# {title}", "", "## Headline (CMI-RewardBench definitions, 95% bootstrap CI)", ""]
    lines += ["| dataset | task | n | SRCC | LCC | K-Tau | ACC |", "|---|---|---|---|---|---|---|"]
    for r in metrics["summary_ci"]:
        cells = []
        for col in ("SRCC", "LCC", "K-Tau", "ACC"):
            pct = col == "ACC"
            v = fmt(r.get(col), pct)
            if r.get(f"{col}_lo") is not None:
                v += f" [{fmt(r[f'{col}_lo'], pct)}, {fmt(r[f'{col}_hi'], pct)}]"
            cells.append(v if col in r else "")
        lines.append(f"| {r['dataset']} | {r['task']} | {r['n']} | " + " | ".join(cells) + " |")

    def val(dataset: str, task: str, col: str) -> float | None:
        hit = [r for r in metrics["summary"] if (r["dataset"], r["task"]) == (dataset, task)]
        return hit[0].get(col) if hit else None

    lines += [
        "",
        "Final (as upstream): PAM mean SRCC, MusicEval SRCC, Music Arena ACC, CMI-Pref mean ACC",
        "",
    ]
    final = [
        fmt(mean([val("PAM", "musicality", "SRCC"), val("PAM", "alignment", "SRCC")])),
        fmt(val("MusicEval", "musicality", "SRCC")),
        fmt_pct(val("MusicArena", "preference", "ACC")) + "%",
        fmt_pct(mean([val("CMI-Pref", "alignment", "ACC"), val("CMI-Pref", "musicality", "ACC")]))
        + "%",
    ]
    lines += ["| PAM SRCC | MusicEval SRCC | Music Arena ACC | CMI-Pref ACC |", "|---|---|---|---|"]
    lines.append("| " + " | ".join(final) + " |")
    if metrics["system_level"]:
        lines += ["", "## PAM system level (mean per generating system)", ""]
        lines += ["| task | systems | SRCC | LCC | K-Tau |", "|---|---|---|---|---|"]
        for r in metrics["system_level"]:
            lines.append(
                f"| {r['task']} | {r['n_systems']} | {fmt(r['SRCC'])} | {fmt(r['LCC'])} | {fmt(r['K-Tau'])} |"
            )
    lines += ["", "## Coverage", ""]
    lines.append(
        f"{stats['successful']} of {stats['total_rows']} rows scored, {stats['failed']} failed."
    )
    for reason, n in stats["failure_reasons"].items():
        lines.append(f"- {n} x `{reason}`")
    if stats.get("run"):
        run = stats["run"]
        lines.append("")
        lines.append(
            f"Run: {run.get('scored_rows', 0)} rows scored this run, {run.get('skipped_rows', 0)} "
            f"resumed, {run.get('audio_seconds', 0):.1f} s of audio in {run.get('wall_s', 0):.1f} s "
            f"({run.get('audio_s_per_s', 0):.1f} audio-s/s)."
        )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def resolved(path: Any) -> str | None:
    return None if path is None else str(Path(str(path)).resolve())


def run_metadata(run_info: dict[str, Any]) -> dict[str, Any]:
    """Upstream's runner arguments in metadata.json, from our run's `run_info` (its config)."""
    cfg = run_info.get("config") or {}
    model, ds = cfg.get("model") or {}, cfg.get("dataset") or {}
    subsets = cfg.get("subset", ds.get("subsets"))  # bench.run's `subset=` (name or list)
    if isinstance(subsets, str):
        subsets = None if subsets == "all" else [subsets]
    init = model.get("init_kwargs")
    if init is None:  # a config-built model: its settings are its constructor's arguments
        skip = ("name", "_target_", "class_path", "score_kwargs")
        init = {k: v for k, v in model.items() if k not in skip}
    return {
        "model": model.get("name"),
        "model_name": model.get("name"),
        "checkpoint": resolved(model.get("checkpoint")),
        "dataset_jsonl": resolved(ds.get("jsonl")),
        "dataset_root": resolved(ds.get("root")),
        "split": ds.get("split"),
        "subset": "all" if not subsets else subsets[0] if len(subsets) == 1 else list(subsets),
        "device": run_info.get("device", model.get("device")),
        "batch_size": cfg.get("batch_size"),
        "max_dur": cfg.get("max_dur"),
        "model_init_kwargs": init,
        "model_score_kwargs": {
            **(model.get("score_kwargs") or {}),
            **(cfg.get("score_kwargs") or {}),
        },
        "model_class_path": model.get("class_path") or model.get("_target_"),
        "custom_model_init_checkpoint": model.get("checkpoint"),
        "custom_model_init_device": model.get("device"),
    }


def write_metadata(
    out: Path,
    results: Path,
    n_rows: int,
    metrics: dict[str, Any],
    run_info: dict[str, Any] | None,
) -> None:
    """metadata.json as upstream's runner writes it: its arguments, paths, `num_rows`,
    `eval_report`. Without run info (re-evaluating a file) an existing metadata.json's
    arguments are kept (upstream's own, in one of its run folders)."""
    old = out / "metadata.json"
    meta = dict.fromkeys(METADATA_ARGS)
    fail_on_error = False  # ours: a failed clip is recorded and the run goes on (max_fail_frac)
    if run_info is not None:
        meta |= run_metadata(run_info)
    elif old.is_file():
        try:
            prev = json.loads(old.read_text(encoding="utf-8"))
        except ValueError:
            prev = None
        if isinstance(prev, dict):
            meta |= {k: prev.get(k) for k in METADATA_ARGS}
            fail_on_error = prev.get("fail_on_error", fail_on_error)
    outputs = metrics["config"]["outputs"]
    meta |= {
        "run_dir": str(out.resolve()),
        "results_jsonl": str(results.resolve()),
        "num_rows": n_rows,
        "fail_on_error": fail_on_error,
        "eval_report": {
            "summary_csv": str((out / outputs["summary_csv"]).resolve()),
            "detail_csv": str((out / outputs["detail_csv"]).resolve()),
            "json": str((out / outputs["json"]).resolve()),
            "temp_ordered_latex": str((out / "latex.txt").resolve()),
            "summary_rows": len(metrics["summary"]),
            "detail_rows": len(metrics["detail"]),
        },
    }
    write_json(old, meta)


def evaluate_rows(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    split: str | None = "test",
    n_boot: int = 1000,
    seed: int = 0,
    plots: bool = True,
    run_info: dict[str, Any] | None = None,
    title: str = "Benchmark results",
    variant: str | None = None,
    results: str | Path | None = None,
    plotter: ForkedDrawing | None = None,
) -> dict[str, Any]:
    """Compute metrics for result rows and write every metrics file; returns metrics.json.

    `variant` labels latex.txt's rows (default: the output folder's name, as upstream);
    `results`: the file the rows came from, for metadata.json (default: out_dir/results.jsonl);
    `plotter`: a `bench.plots.ForkedDrawing` that draws the plots in forked copies while the
    metrics are computed (else they are drawn here, after the metrics).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plots and plotter is not None:
        plotter.submit(select_rows(rows, split), out / "plots")
    metrics = compute_metrics(rows, split=split, n_boot=n_boot, seed=seed)
    stats = compute_statistics(rows)
    old = out / "statistics.json"
    if run_info is None and old.is_file():  # standalone re-evaluation keeps the run's timings
        run_info = json.loads(old.read_text()).get("run")
    if run_info is not None:
        stats["run"] = run_info
    made: list[str] = []
    if plots and plotter is not None:
        made = [str(p) for p in plotter.result()]
    elif plots:
        from bench.plots import make_plots  # here on purpose: matplotlib is slow to import

        made = [str(p) for p in make_plots(select_rows(rows, split), out / "plots")]
    metrics["plots"] = [str(Path(p).relative_to(out)) for p in made]
    write_text(out / "metrics_summary.csv", frame_csv(metrics["summary"]))
    write_text(out / "metrics_detail.csv", frame_csv(metrics["detail"]))
    write_json(out / "metrics.json", metrics)
    write_text(out / "latex.txt", "\n".join(latex_lines(metrics, variant or out.name)) + "\n")
    write_metadata(out, Path(results or out / "results.jsonl"), len(rows), metrics, run_info)
    write_text(out / "metrics_ci.csv", to_csv(metrics["summary_ci"], CI_COLS))
    write_text(out / "metrics_system.csv", to_csv(metrics["system_level"], SYSTEM_COLS))
    write_json(out / "statistics.json", stats)
    write_text(out / "summary.md", render_summary_md(metrics, stats, title, made))
    return metrics


def usable(rows: Sequence[dict[str, Any]], split: str | None) -> list[dict[str, Any]]:
    """Rows of a benchmark subset, kept by the split filter, that carry predictions."""
    return [
        r
        for r in select_rows(rows, split)
        if r[S.SUBSET] in SUBSETS and any(k.startswith(S.PREDICTED) for k in r)
    ]


def no_usable_rows(path: Path, rows: Sequence[dict[str, Any]], split: str | None) -> str:
    """Why nothing in `path` can be evaluated: what each filter dropped."""
    lines = sum(1 for line in path.open(encoding="utf-8-sig") if line.strip())
    if not rows:
        why = "no JSON object on any line" if lines else "the file is empty"
        return f"{path}: no usable result rows: {why}"
    kept = select_rows(rows, split)
    known = [r for r in kept if r[S.SUBSET] in SUBSETS]
    why = (
        f"{len(rows)} rows, {len(rows) - len(kept)} dropped by split={split!r}, "
        f"{len(kept) - len(known)} outside the four subsets (by source)"
    )
    if known:
        why += f", {len(known)} without predicted_* fields (a dataset file, not results?)"
    return f"{path}: no usable result rows: {why}"


@contextlib.contextmanager
def folder_locks(
    source: Path, out: Path, wait: bool, on_wait: Callable[[str], None] = print_waiting
) -> Iterator[None]:
    """bench.run's folder lock (bench.guard.OutputLock), held for an evaluation: exclusive on
    `out` (two evaluations never interleave their metrics files), shared on `source` when it is
    another folder (no bench.run writes the results while they are read). Taken in path order,
    so two evaluations reading each other's folder cannot deadlock. A source folder where no
    lock file can be made (read-only) is read unlocked: no bench.run can write there either."""
    folders = {out.resolve(): False, source.resolve(): True}
    if out.resolve() == source.resolve():
        folders = {out.resolve(): False}
    with contextlib.ExitStack() as stack:
        for folder in sorted(folders):
            shared = folders[folder]
            lock = OutputLock(
                folder, shared=shared, wait=wait, what="bench.evaluate", on_wait=on_wait
            )
            try:
                stack.enter_context(lock)
            except PermissionError:
                if not shared:
                    raise
        yield


def evaluate_results_file(
    results: str | Path,
    out_dir: str | Path | None = None,
    *,
    split: str | None = "test",
    n_boot: int = 1000,
    seed: int = 0,
    plots: bool = True,
    run_info: dict[str, Any] | None = None,
    title: str | None = None,
    variant: str | None = None,
    lock: bool = True,
    wait: bool = False,
    on_wait: Callable[[str], None] = print_waiting,
) -> dict[str, Any]:
    """Every metrics file for a results.jsonl, ours (last record per row wins) or upstream's;
    written into `out_dir` (default: the results file's folder); returns metrics.json.
    `lock`: hold the folders' locks (`folder_locks`; False when the caller holds them, as
    bench.run does); a folder in use raises `OutputBusy` naming the holder, or with `wait`
    `on_wait` gets a line naming it (default: printed) and the evaluation waits for it.
    Raises FileNotFoundError, NoUsableRows when no row can be evaluated, or
    `bench.store.ResultsFileError` for a line bench.run could not have written."""
    results = Path(results)
    if not results.is_file():
        raise FileNotFoundError(f"{results}: results file not found")
    out = Path(out_dir or results.parent)
    with folder_locks(results.parent, out, wait, on_wait) if lock else contextlib.nullcontext():
        rows = read_results(results)
        if not usable(rows, split):
            raise NoUsableRows(no_usable_rows(results, rows, split))
        return evaluate_rows(
            rows,
            out,
            split=split,
            n_boot=n_boot,
            seed=seed,
            plots=plots,
            run_info=run_info,
            title=title or f"Benchmark results: {results.parent}",
            variant=variant,
            results=results,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.evaluate", description=__doc__)
    p.add_argument("results", help="results.jsonl of python -m bench.run or of CMI-RewardBench")
    p.add_argument("--out-dir", default=None, help="default: the results file's folder")
    p.add_argument("--split", default="test", help="keep rows with this split ('' = all)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (0 = no CIs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default=None, help="latex.txt row label (default: out folder)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--wait",
        action="store_true",
        help="when a bench.run or another evaluation holds the folder, wait for it (default: "
        "refuse, exit 4, naming it)",
    )
    a = p.parse_args(argv)
    try:
        m = evaluate_results_file(
            a.results,
            a.out_dir,
            split=a.split or None,
            n_boot=a.n_boot,
            seed=a.seed,
            plots=not a.no_plots,
            variant=a.variant,
            wait=a.wait,
        )
    except (FileNotFoundError, NoUsableRows) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunRefused as e:  # a malformed results line (its file and line), a busy folder
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(frame_csv(m["summary"]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
