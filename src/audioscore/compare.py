"""Compare training runs (plan A / plan B, with and without GRL): markdown table + PNG plots.

    python scripts/compare_plans.py outputs/demo/plan_a outputs/demo/plan_b --out outputs/compare
    python scripts/compare_plans.py wandb:ENTITY/PROJECT/RUN_ID ... --out outputs/compare

A local RUN_DIR is a Hydra run directory: metrics come from every `metrics.csv` (Lightning's
CSVLogger) under it, the label from `.hydra/hydra.yaml` (experiment choice) or the directory
name. `wandb:` runs are read through wandb's public API (needs network and WANDB_API_KEY).
Writes `plans.md`, `plans.csv` and one PNG per metric.
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

from audiobase.files import write_text

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


def write_table(rows: list[dict[str, str]], out: Path) -> Path:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r.get(c, "-") for c in cols) + " |" for r in rows]
    note = (
        "\n\nbest = max over validation epochs (min for mae, and for adv_acc: lower = less "
        "singer information left); final = last validation epoch; steps = last optimizer step "
        "logged. mae: calibrated scores vs labels, each validation clip calibrated by a fit on "
        "the other validation folds.\n"
    )
    md = write_text(out / "plans.md", "# Plan comparison\n\n" + "\n".join(lines) + note)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    write_text(out / "plans.csv", buf.getvalue())
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
    table = write_table(rows, out)
    plots = plot_metrics(runs, out)
    return {"table": table, "plots": plots, "rows": rows, "failed": failed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", nargs="+", help="Hydra run dirs or wandb:ENTITY/PROJECT/RUN_ID")
    ap.add_argument("--out", default="outputs/compare")
    args = ap.parse_args(argv)
    res = compare(args.runs, args.out)
    print(Path(res["table"]).read_text())
    for p in res["plots"]:
        print(f"plot: {p}")
