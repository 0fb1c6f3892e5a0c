"""The timbre experiment's records and report: `cells.csv` (one row per cell), `timbre.md` (mean
+- std over seeds, losses against control, GRL recoveries) and `timbre.png`."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from audiobase.files import write_text

FIELDS = [
    "regime", "experiment", "seed", "val_srcc", "val_srcc_pooled", "val_mae", "timbre_weight",
    "probe_c1", "probe_c1e4", "probe_all_c1", "probe_timbre_c1", "train_s",
]  # fmt: skip
SHOWN = {  # table columns: key -> (title, digits)
    "val_srcc": ("val SRCC", 3),
    "val_mae": ("MAE", 2),
    "timbre_weight": ("timbre weight", 1),
    "probe_c1": ("probe C=1", 3),
    "probe_c1e4": ("probe C=1e4", 3),
    "probe_all_c1": ("probe C=1, all", 3),
    "probe_timbre_c1": ("probe C=1, timbre", 3),
}


def read_cells(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    text = {"regime", "experiment"}
    return [{k: (v if k in text else float(v)) for k, v in r.items()} for r in rows]


def write_cells(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def cell_stats(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, tuple]]:
    """(regime, experiment) -> metric -> (mean, std over seeds, n)."""
    out: dict[tuple[str, str], dict[str, tuple]] = {}
    for r in rows:
        out.setdefault((r["regime"], r["experiment"]), {})
    for key in out:
        sel = [r for r in rows if (r["regime"], r["experiment"]) == key]
        out[key] = {}
        for m in FIELDS[3:]:
            v = np.array([float(r[m]) for r in sel], dtype=float)
            v = v[~np.isnan(v)]
            out[key][m] = (
                (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))
                if len(v)
                else (float("nan"), float("nan"), 0)
            )
    return out


def fmt(stat: tuple, digits: int) -> str:
    mean, std, n = stat
    if not n:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def effects(rows: list[dict[str, Any]], grid: DictConfig) -> list[str]:
    """Per-seed differences: each regime's loss of val SRCC against control, the GRL's recovery
    of it, and plan B minus plan A; as markdown lines."""
    by = {(r["regime"], r["experiment"], int(r["seed"])): float(r["val_srcc"]) for r in rows}
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = []

    def diffs(a: tuple[str, str], b: tuple[str, str]) -> np.ndarray:
        return np.array(
            [by[(*a, s)] - by[(*b, s)] for s in seeds if (*a, s) in by and (*b, s) in by]
        )

    def say(v: np.ndarray) -> str:
        if not len(v):
            return "-"
        return f"{v.mean():+.3f} (per seed {', '.join(f'{x:+.3f}' for x in v)})"

    confounded = [str(k) for k in grid.use_regimes if grid.regimes[k].timbre_confound]
    fixes: dict[str, list[str]] = {
        "muq_lora": ["muq_lora_grl"],
        "hybrid_campp": ["hybrid_campp_grl"],
    }
    for label, variant in (grid.get("variants") or {}).items():  # GRL variants of either plan
        base = str(variant.experiment).removesuffix("_grl")
        if base in fixes:
            fixes[base].append(str(label))
    fixes["hybrid_campp"].append("hybrid_campp_proj_grl")
    for exp, grls in fixes.items():
        for regime in confounded:
            loss = diffs(("control", exp), (regime, exp))
            if not len(loss):
                continue
            lines.append(f"- {regime}, {exp}: loss against control {say(loss)}")
            for grl_exp in grls:
                grl = diffs((regime, grl_exp), (regime, exp))
                if len(grl):
                    rec = grl.mean() / loss.mean() if abs(loss.mean()) > 1e-9 else np.nan
                    lines.append(
                        f"  - {grl_exp} minus {exp}: {say(grl)}, recovering {rec:.0%} of the loss"
                    )
    for regime in [str(k) for k in grid.use_regimes]:
        for suffix in ("", "_grl"):
            d = diffs((regime, f"hybrid_campp{suffix}"), (regime, f"muq_lora{suffix}"))
            if len(d):
                lines.append(f"- {regime}: plan B{suffix.replace('_grl', ' + GRL')} minus "
                             f"plan A{suffix.replace('_grl', ' + GRL')}: {say(d)}")  # fmt: skip
    return lines


def write_report(rows: list[dict[str, Any]], grid: DictConfig, out: Path) -> Path:
    stats = cell_stats(rows)
    cols = ["regime", "experiment", "seeds"] + [t for t, _ in SHOWN.values()]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for regime in grid.use_regimes:
        for exp in grid.experiments:
            st = stats.get((str(regime), str(exp)))
            if st is None:
                continue
            cells = [fmt(st[m], d) for m, (_, d) in SHOWN.items()]
            lines.append(f"| {regime} | {exp} | {st['val_srcc'][2]} | " + " | ".join(cells) + " |")
    knobs = ", ".join(
        f"{k}: X={grid.regimes[k].timbre_effect:g}, Y={grid.regimes[k].timbre_confound:g}"
        for k in grid.use_regimes
    )
    secs = [float(r["train_s"]) for r in rows]
    text = "\n".join(
        [
            "# Timbre experiment",
            "",
            f"Regimes ({knobs}); mean ± std over seeds; {len(rows)} cells, training "
            f"{np.sum(secs):.0f} s in all ({np.mean(secs):.1f} s per cell).",
            "",
            *lines,
            "",
            "val SRCC within validation groups; MAE of calibrated scores (label points); timbre "
            "weight = score points per unit tau the scorer adds beyond quality (truth: X); probe = "
            "singer-probe margin above chance (logistic, C=1 or 1e4) on the MuQ part of the "
            "pooled vector, on all of it (all: + plan B's timbre dims) or on the timbre dims "
            "alone.",
            "",
            "Per-seed differences of val SRCC:",
            "",
            *effects(rows, grid),
            "",
        ]
    )
    return write_text(out / "timbre.md", text)


def plot(rows: list[dict[str, Any]], grid: DictConfig, out: Path) -> Path:
    import matplotlib  # heavy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes, exps = [str(r) for r in grid.use_regimes], [str(e) for e in grid.experiments]
    metrics = ["val_srcc", "val_mae", "timbre_weight", "probe_c1", "probe_c1e4"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4.2))
    width = 0.8 / len(exps)
    for ax, m in zip(axes, metrics, strict=True):
        for j, exp in enumerate(exps):
            for i, regime in enumerate(regimes):
                v = [float(r[m]) for r in rows if (r["regime"], r["experiment"]) == (regime, exp)]
                v = [x for x in v if not np.isnan(x)]
                if not v:
                    continue
                x = i + (j - (len(exps) - 1) / 2) * width
                ax.bar(
                    x, np.mean(v), width, color=f"C{j}", alpha=0.6, label=exp if i == 0 else None
                )
                ax.plot([x] * len(v), v, "k.", ms=4)
        if m == "timbre_weight":  # the truth: the corpus's timbre effect X
            for i, regime in enumerate(regimes):
                x_true = float(grid.regimes[regime].timbre_effect)
                ax.plot([i - 0.45, i + 0.45], [x_true, x_true], "k--", lw=1)
        ax.set_xticks(range(len(regimes)), regimes)
        ax.set_title(SHOWN[m][0])
        ax.grid(axis="y", alpha=0.3)
        if m == "val_srcc":
            lo = min(float(r[m]) for r in rows)
            ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(exps), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0.07 * ((len(exps) + 3) // 4), 1, 1))
    path = out / "timbre.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
