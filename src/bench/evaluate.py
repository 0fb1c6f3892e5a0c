"""Metrics files from a results.jsonl: `python -m bench.evaluate RESULTS [--out-dir DIR]`.

Writes metrics.json, metrics_summary.csv, metrics_detail.csv, metrics_system.csv,
statistics.json, summary.md and plots/*.png next to the results (or into --out-dir).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audiobase.files import write_json, write_text
from bench.latex import fmt_pct, latex_lines, mean
from bench.metrics import compute_metrics, select_rows
from bench.store import read_latest

SUMMARY_COLS = ["dataset", "task", "n", "SRCC", "LCC", "K-Tau", "ACC"]
DETAIL_COLS = ["dataset", "task", "group_key", "group_value", "ref_category", "n", "ACC"]
SYSTEM_COLS = ["dataset", "task", "level", "n_systems", "SRCC", "LCC", "K-Tau"]


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
        c = per_subset.setdefault(r.get("benchmark_dataset", "Unknown"), Counter())
        c["rows"] += 1
        c[r.get("status", "ok")] += 1
        c["valid_a"] += bool(r.get("inference_valid_a"))
        if "inference_valid_b" in r:
            c["valid_b"] += bool(r["inference_valid_b"])
        if r.get("status") == "error":
            reasons[error_kind(r.get("inference_error", ""))] += 1
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
    for r in metrics["summary"]:
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
) -> dict[str, Any]:
    """Compute metrics for result rows and write every metrics file; returns metrics.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(rows, split=split, n_boot=n_boot, seed=seed)
    metrics["config"] = {"split": split, "n_boot": n_boot, "seed": seed}
    stats = compute_statistics(rows)
    old = out / "statistics.json"
    if run_info is None and old.is_file():  # standalone re-evaluation keeps the run's timings
        run_info = json.loads(old.read_text()).get("run")
    if run_info is not None:
        stats["run"] = run_info
    made: list[str] = []
    if plots:
        from bench.plots import make_plots  # here on purpose: matplotlib is slow to import

        made = [str(p) for p in make_plots(select_rows(rows, split), out / "plots")]
    metrics["plots"] = [str(Path(p).relative_to(out)) for p in made]
    write_json(out / "metrics.json", metrics)
    write_text(out / "metrics_summary.csv", to_csv(metrics["summary"], SUMMARY_COLS))
    write_text(out / "metrics_detail.csv", to_csv(metrics["detail"], DETAIL_COLS))
    write_text(out / "metrics_system.csv", to_csv(metrics["system_level"], SYSTEM_COLS))
    write_json(out / "statistics.json", stats)
    write_text(out / "summary.md", render_summary_md(metrics, stats, title, made))
    variant = variant or out.resolve().parent.name  # outputs/bench/<model>/<dataset>
    write_text(out / "latex.txt", "\n".join(latex_lines(metrics, variant)) + "\n")
    return metrics


def evaluate_file(
    results: str | Path, out_dir: str | Path | None = None, **kw: Any
) -> dict[str, Any]:
    """Recompute all metrics files from a results.jsonl (last record per row wins)."""
    results = Path(results)
    if not results.is_file():
        raise FileNotFoundError(f"{results}: results file not found")
    latest = read_latest([results])
    rows = sorted(latest.values(), key=lambda r: r.get("bench_row_index", 0))
    title = kw.pop("title", f"Benchmark results: {results.parent}")
    kw.setdefault("variant", results.resolve().parent.parent.name)  # <model>/<dataset>/results
    return evaluate_rows(rows, out_dir or results.parent, title=title, **kw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.evaluate", description=__doc__)
    p.add_argument("results", help="results.jsonl written by python -m bench.run")
    p.add_argument("--out-dir", default=None, help="default: the results file's folder")
    p.add_argument("--split", default="test", help="keep rows with this split ('' = all)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (0 = no CIs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args(argv)
    m = evaluate_file(
        a.results,
        a.out_dir,
        split=a.split or None,
        n_boot=a.n_boot,
        seed=a.seed,
        plots=not a.no_plots,
    )
    print(to_csv(m["summary"], SUMMARY_COLS), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
