"""Compare training runs (plan A / plan B, with and without GRL): markdown table + PNG plots.

    python scripts/compare_plans.py outputs/demo/plan_a outputs/demo/plan_b --out outputs/compare
    python scripts/compare_plans.py wandb:ENTITY/PROJECT/RUN_ID ... --out outputs/compare
    python scripts/compare_plans.py --by-experiment outputs/train/default/multirun_* \
        --probe-data data/synth/val.json --out outputs/compare

A local RUN_DIR is a Hydra run directory: metrics come from every `metrics.csv` (Lightning's
CSVLogger) under it, the label from `.hydra/hydra.yaml` (experiment choice) or the directory
name. A multirun (sweep) directory stands for the runs in it. `wandb:` runs are read through
wandb's public API (needs network and WANDB_API_KEY). Writes `plans.md`, `plans.csv` and one PNG
per metric; `--by-experiment` writes `experiments.md`, `experiments.csv` and `experiments.png`:
mean ± std over the runs (seeds) of each experiment of the best val SRCC, the val MAE at that
epoch and, with `--probe-data`, the singer-probe margin of each run's export.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audiobase.files import atomic_path, write_text
from audioscore.studies.probe import probe

METRICS = {
    "val/srcc": "validation SRCC",
    "val/pair_acc": "validation pairwise accuracy",
    "val/mae": "validation MAE of calibrated scores (label units)",
    "val/adv_acc": "adversary (singer) accuracy",
}
LOWER_IS_BETTER = {"val/mae", "val/adv_acc"}  # best = min over epochs


class RunLogError(ValueError):
    """A run directory without readable metric logs; names the run and the reason."""


@dataclass
class Run:
    name: str
    label: str
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # key -> [(step, v)]


def read_metrics_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger file -> {metric: [(step, value)]}, empty cells skipped."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(float(row.get("step") or 0))
            except ValueError:
                continue
            for key, cell in row.items():
                if key in ("step", "epoch") or cell in (None, ""):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                out.setdefault(key, []).append((step, value))
    return out


def label_run(run_dir: Path) -> str:
    """The experiment name Hydra recorded, else the directory name."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        try:
            choices = yaml.safe_load(hydra_file.read_text())["hydra"]["runtime"]["choices"]
            if choices.get("experiment"):
                return str(choices["experiment"])
        except (yaml.YAMLError, KeyError, TypeError):
            pass
    return run_dir.name


def load_local_run(run_dir: Path) -> Run:
    if not run_dir.is_dir():
        raise RunLogError(f"{run_dir}: not a directory")
    files = sorted(run_dir.rglob("metrics.csv"))
    if not files:
        raise RunLogError(f"{run_dir}: no metrics.csv (CSVLogger) found under it")
    series: dict[str, list[tuple[int, float]]] = {}
    for f in files:  # resumed runs write a new version_N: later files continue the series
        for key, points in read_metrics_csv(f).items():
            series.setdefault(key, []).extend(points)
    return Run(name=str(run_dir), label=label_run(run_dir), series=series)


def load_wandb_run(path: str) -> Run:
    import wandb  # optional and slow to import: only for online runs

    run = wandb.Api().run(path)
    series: dict[str, list[tuple[int, float]]] = {}
    for row in run.scan_history(keys=None):
        step = row.get("trainer/global_step", row.get("_step")) or 0
        for key in METRICS:
            v = row.get(key)
            if isinstance(v, int | float) and not math.isnan(v):
                series.setdefault(key, []).append((int(step), float(v)))
    exp = (run.config or {}).get("experiment") or run.name
    return Run(name=f"wandb:{path}", label=str(exp), series=series)


def load_run(spec: str) -> Run:
    if spec.startswith("wandb:"):
        return load_wandb_run(spec[len("wandb:") :])
    return load_local_run(Path(spec))


def expand_specs(specs: list[str]) -> list[str]:
    """Run specs with each multirun (sweep) directory replaced by the run dirs in it."""
    out: list[str] = []
    for spec in specs:
        path = Path(spec)
        runs = sorted(p.parent for p in path.glob("*/.hydra")) if path.is_dir() else []
        if runs and not (path / ".hydra").is_dir():
            out.extend(str(r) for r in runs)
        else:
            out.append(spec)
    return out


def run_summary(run: Run, probe_data: str | None) -> dict[str, float]:
    """Best val SRCC, val MAE at that validation and (with `probe_data`) the singer-probe
    margin of the run's export; NaN for what the run does not have."""
    srcc = run.series.get("val/srcc", [])
    mae = best = math.nan
    if srcc:
        best_step, best = max(srcc, key=lambda p: p[1])
        mae = dict(run.series.get("val/mae", [])).get(best_step, math.nan)
    margin = math.nan
    export = Path(run.name) / "export"
    if probe_data and (export / "config.yaml").is_file():
        try:
            margin = float(probe(str(export), probe_data)["margin"])
        except ValueError as e:  # e.g. too few clips per singer: the other columns stand
            print(f"{run.name}: no probe margin: {e}", file=sys.stderr)
    return {"val/srcc": best, "val/mae": mae, "probe margin": margin}


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean and sample std of the finite values (std 0 for one), and how many there were."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    mean = sum(finite) / len(finite)
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1) if len(finite) > 1 else 0.0
    return mean, math.sqrt(var), len(finite)


def compare_experiments(
    specs: list[str], out: str | Path, probe_data: str | None = None
) -> dict[str, Any]:
    """Runs grouped by experiment: mean ± std of `run_summary` per experiment, as
    `experiments.md` / `.csv` and a bar plot `experiments.png` under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_exp: dict[str, list[dict[str, float]]] = {}
    for spec in expand_specs(specs):
        try:
            run = load_run(spec)
        except (RunLogError, OSError, ImportError) as e:
            print(f"skipping {e}", file=sys.stderr)
            continue
        per_exp.setdefault(run.label, []).append(run_summary(run, probe_data))
    if not per_exp:
        raise RunLogError(f"no readable runs in {specs}")
    keys = ["val/srcc", "val/mae", "probe margin"]
    rows, stats = [], {}
    for exp in sorted(per_exp):
        row = {"experiment": exp, "runs": str(len(per_exp[exp]))}
        for key in keys:
            mean, std, n = mean_std([r[key] for r in per_exp[exp]])
            stats[(exp, key)] = (mean, std)
            row[key] = f"{mean:.3f} ± {std:.3f}" if n else "-"
        rows.append(row)
    note = (
        "mean ± sample std over the runs of each experiment. val/srcc: best validation "
        "SRCC of the run (its exported checkpoint); val/mae: calibrated-score MAE at that "
        "validation; probe margin: singer-probe accuracy above chance on the run's export "
        "(lower = less singer identity left)."
    )
    table = write_table(rows, out / "experiments", "Experiments", note)
    plot = plot_experiments(sorted(per_exp), keys, stats, out / "experiments.png")
    return {"table": table, "plot": plot, "rows": rows}


def plot_experiments(exps: list[str], keys: list[str], stats: dict, path: Path) -> Path:
    """One panel per metric: a bar per experiment, the std as its error bar."""
    import matplotlib  # heavy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5))
    for ax, key in zip(axes, keys, strict=True):
        means = [stats[(e, key)][0] for e in exps]
        stds = [stats[(e, key)][1] for e in exps]
        ax.bar(range(len(exps)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(exps)), exps, rotation=30, ha="right")
        ax.set_title(key)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def summarise(run: Run) -> dict[str, str]:
    """Final and best value per metric, plus the last step seen."""
    row = {"run": run.label, "dir": run.name}
    steps = [s for pts in run.series.values() for s, _ in pts]
    row["steps"] = str(max(steps)) if steps else "-"
    for key in METRICS:
        pts = run.series.get(key, [])
        short = key.split("/", 1)[1]
        if pts:
            row[f"{short} final"] = f"{pts[-1][1]:.3f}"
            pick = min if key in LOWER_IS_BETTER else max
            best = pick(pts, key=lambda p: p[1])
            row[f"{short} best"] = f"{best[1]:.3f}"
        else:
            row[f"{short} final"] = row[f"{short} best"] = "-"
    return row


def write_table(rows: list[dict[str, str]], stem: Path, title: str, note: str) -> Path:
    """`stem`.md (a markdown table under `title`, then `note`) and `stem`.csv of `rows` (the
    first row's keys are the columns; a missing cell reads "-"); returns the .md path."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r.get(c, "-") for c in cols) + " |" for r in rows]
    md = write_text(stem.with_suffix(".md"), f"# {title}\n\n" + "\n".join(lines) + f"\n\n{note}\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    write_text(stem.with_suffix(".csv"), buf.getvalue())
    return md


def plot_metrics(runs: list[Run], out: Path) -> list[Path]:
    import matplotlib  # heavy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, title in METRICS.items():
        if not any(key in r.series for r in runs):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in runs:
            pts = sorted(r.series.get(key, []))
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3, label=r.label)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        p = out / f"{key.replace('/', '_')}.png"
        fig.tight_layout()
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths


def compare(specs: list[str], out: str | Path) -> dict[str, Any]:
    """Load runs, write the table and plots under `out`; unreadable runs are reported, skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, failed = [], []
    for spec in specs:
        try:
            runs.append(load_run(spec))
        except (RunLogError, OSError, ImportError) as e:
            failed.append(f"{spec}: {e}")
            print(f"skipping {e}", file=sys.stderr)
    if not runs:
        raise RunLogError("no readable runs: " + "; ".join(failed))
    seen: dict[str, int] = {}
    for r in runs:  # two runs of one experiment keep distinct legend entries
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} ({Path(r.name).name})"
    rows = [summarise(r) for r in runs]
    note = (
        "best = max over validation epochs (min for mae, and for adv_acc: lower = less "
        "singer information left); final = last validation epoch; steps = last optimizer step "
        "logged. mae: calibrated scores vs labels, each validation clip calibrated by a fit on "
        "the other validation folds."
    )
    table = write_table(rows, out / "plans", "Plan comparison", note)
    plots = plot_metrics(runs, out)
    return {"table": table, "plots": plots, "rows": rows, "failed": failed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", nargs="+", help="Hydra run dirs or wandb:ENTITY/PROJECT/RUN_ID")
    ap.add_argument("--out", default="outputs/compare")
    ap.add_argument(
        "--by-experiment",
        action="store_true",
        help="mean ± std per experiment over its runs (seeds), e.g. after a Hydra multirun",
    )
    ap.add_argument(
        "--probe-data", default=None, help="groups file with `singer` for the probe margin"
    )
    args = ap.parse_args(argv)
    if args.by_experiment:
        try:
            res = compare_experiments(args.runs, args.out, args.probe_data)
        except RunLogError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        print(Path(res["table"]).read_text())
        print(f"plot: {res['plot']}")
        return
    res = compare(args.runs, args.out)
    print(Path(res["table"]).read_text())
    for p in res["plots"]:
        print(f"plot: {p}")
