"""Predicted-vs-human scatter plots and score distributions per subset (PNG, Agg backend).

The runner draws them in its evaluation child (`bench.eval_child`), in forked copies of it
(`ForkedDrawing`) while that child computes the metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from audiobase import schemas as S  # noqa: E402
from audiobase.files import atomic_path  # noqa: E402
from bench.columns import CORR_TASKS, by_subset, norm_pref, numeric_pairs, to_num  # noqa: E402


def save(fig: plt.Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` atomically (audiobase.files.atomic_path): a kill while
    writing leaves the previous file or none, never half a PNG."""
    # fixed margins: tight_layout measures every label and took a third of the drawing time
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.15, top=0.9, wspace=0.3)
    # at most 4 intervals per axis: each tick is a set of artists measured and drawn, and the
    # default count (up to 9) took a third of the drawing time
    for ax in fig.axes:
        ax.locator_params(nbins=4)
    try:
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def title(ax: plt.Axes, text: str) -> None:
    """The axes' title at a fixed height: matplotlib's automatic placement measures every tick
    label to clear a top axis these plots do not have, a fifth of the drawing time."""
    ax.set_title(text, y=1.0)


def plot_scatter(
    rows: Sequence[dict], subset: str, task: str, gt: str, pred: str, out: Path
) -> Path | None:
    """Human score (x) vs predicted score (y), one dot per clip."""
    x, y = numeric_pairs(rows, gt, pred)
    if len(x) == 0:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(x, y, s=10, alpha=0.6)
    ax.set_xlabel(f"human {gt}")
    ax.set_ylabel(f"predicted {task}")
    title(ax, f"{subset} {task} (n={len(x)})")
    return save(fig, out / f"scatter_{subset}_{task}.png")


def plot_pair_distribution(
    rows: Sequence[dict], subset: str, task: str, gt: str, out: Path
) -> Path | None:
    """Histogram of score(A) - score(B), split by the human preference label."""
    suffix = S.MUSICALITY if task in ("musicality", "preference") else S.ALIGNMENT
    pred = S.PREDICTED + suffix
    groups: dict[str, list[float]] = {"model_a": [], "model_b": [], "both": []}
    for r in rows:
        a, b = to_num(r.get(pred)), to_num(r.get(pred + S.SIDE_B))
        label = norm_pref(r.get(gt))
        if label is not None and not (np.isnan(a) or np.isnan(b)):
            groups[label].append(a - b)
    if not any(groups.values()):
        return None
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for label, vals in groups.items():
        if vals:
            label_n = f"human: {label} (n={len(vals)})"
            ax.hist(vals, bins=20, alpha=0.5, histtype="stepfilled", label=label_n)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlabel(f"predicted {suffix}: A - B")
    title(ax, f"{subset} {task}")
    ax.legend(fontsize=7)
    return save(fig, out / f"dist_{subset}_{task}.png")


def plot_score_hist(rows: Sequence[dict], subset: str, out: Path) -> Path | None:
    """Distribution of every predicted score (both sides) per dimension."""
    cols = {
        "musicality": (S.PRED_MUSICALITY, S.PRED_MUSICALITY + S.SIDE_B),
        "alignment": (S.PRED_ALIGNMENT, S.PRED_ALIGNMENT + S.SIDE_B),
    }
    vals = {k: [to_num(r.get(c)) for r in rows for c in cs] for k, cs in cols.items()}
    vals = {k: [v for v in vs if not np.isnan(v)] for k, vs in vals.items()}
    vals = {k: vs for k, vs in vals.items() if vs}
    if not vals:
        return None
    fig, axes = plt.subplots(1, len(vals), figsize=(4.5 * len(vals), 3.5), squeeze=False)
    for ax, (k, vs) in zip(axes[0], vals.items(), strict=True):
        ax.hist(vs, bins=30, histtype="stepfilled")
        title(ax, f"{subset}: predicted {k} (n={len(vs)})")
    return save(fig, out / f"hist_{subset}.png")


def make_plots(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """All plots for selected result rows (see metrics.select_rows) into `out_dir`."""
    return [p for p in draw(rows, out_dir) if p is not None]


def draw(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, part: tuple[int, int] = (0, 1)
) -> list[Path | None]:
    """`make_plots`'s plots in order, None where a plot has no data; `part=(k, n)`: only
    every n-th from the k-th (n processes share the drawing, `ForkedDrawing`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = by_subset(rows)
    jobs: list[Callable[[], Path | None]] = []
    for subset, tasks in CORR_TASKS.items():
        for task, gt, pred in tasks:
            rs = groups.get(subset, [])
            jobs.append(partial(plot_scatter, rs, subset, task, gt, pred, out))
    pair_tasks = [
        ("MusicArena", "preference", S.PREFERENCE),
        ("CMI-Pref", "musicality", S.PREF_MUSICALITY),
        ("CMI-Pref", "alignment", S.PREF_ALIGNMENT),
    ]
    for subset, task, gt in pair_tasks:
        jobs.append(partial(plot_pair_distribution, groups.get(subset, []), subset, task, gt, out))
    for subset, g in groups.items():
        jobs.append(partial(plot_score_hist, g, subset, out))
    k, n = part
    return [job() for job in jobs[k::n]]


class ForkedDrawing:
    """`make_plots` shared among `ways` forked copies of this process, drawing while it goes on
    (they inherit its imported matplotlib: no second import): `submit`, then `result`. Where
    there is no fork, `result` draws here; a copy that fails has its share drawn here."""

    def __init__(self, ways: int = 1) -> None:
        self.ways = max(1, ways) if hasattr(os, "fork") else 1
        self.job: tuple[Sequence[dict[str, Any]], Path, list[tuple[int, int]]] | None = None

    def submit(self, rows: Sequence[dict[str, Any]], out_dir: str | Path) -> None:
        """Start the copies drawing `rows` into `out_dir`; returns at once."""
        copies = (
            [self._start(rows, Path(out_dir), j) for j in range(self.ways)] if self.ways > 1 else []
        )
        self.job = (rows, Path(out_dir), copies)

    def _start(self, rows: Sequence[dict[str, Any]], out: Path, j: int) -> tuple[int, int]:
        """Fork a copy drawing share j; (its pid, the pipe it answers on)."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the copy: draw share j, report the paths, exit without cleanup
            os.close(r)
            code = 1
            try:
                made = draw(rows, out, (j, self.ways))
                with os.fdopen(w, "w") as f:
                    f.write(json.dumps([None if p is None else str(p) for p in made]))
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        return pid, r

    def result(self) -> list[Path]:
        """The PNGs written, in `make_plots`'s order (waits for the copies)."""
        if self.job is None:
            raise RuntimeError("ForkedDrawing.result() before submit()")
        rows, out, copies = self.job
        if not copies:
            return make_plots(rows, out)
        shares = [self._collect(rows, out, j, pid, r) for j, (pid, r) in enumerate(copies)]
        total = sum(len(share) for share in shares)  # share j holds items j, j + ways, ...
        made = (shares[i % self.ways][i // self.ways] for i in range(total))
        return [p for p in made if p is not None]

    def _collect(
        self, rows: Sequence[dict[str, Any]], out: Path, j: int, pid: int, r: int
    ) -> list[Path | None]:
        with os.fdopen(r) as f:
            answer = f.read()
        _, status = os.waitpid(pid, 0)
        if status == 0 and answer:
            return [None if p is None else Path(p) for p in json.loads(answer)]
        return draw(rows, out, (j, self.ways))
