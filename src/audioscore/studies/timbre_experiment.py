"""The controlled timbre experiment: when does a timbre branch help, when does it mislead, and
does the GRL singer adversary fix it (docs/timbre.md).

    python scripts/timbre_experiment.py --out outputs/timbre [key=value ...]

The grid lives in `conf/timbre/timbre.yaml` (dotted overrides on the command line): three
synthetic corpora that differ only in their labels (`audioscore.synth` timbre knobs; the audio is
identical), `control` (no timbre term), `genuine` (timbre is part of the true score) and
`spurious` (timbre shifts the training labels only); every experiment of `experiments` on each, for
every training seed, with the same optimizer steps. Each cell trains in this process
(`audioscore.train.train`), then scores the validation clips once with its final weights:

- `val_srcc`: SRCC within the validation groups, size-weighted (the training log's `val/srcc`);
  `val_srcc_pooled` over all validation clips;
- `val_mae`: calibrated scores against the labels, each clip calibrated out of sample (`val/mae`);
- `timbre_weight`: score points per unit of the singer's timbre tau that the scorer adds beyond
  quality: the tau coefficient over the quality coefficient of a least-squares fit of its raw
  validation scores on (quality, tau); truth: the corpus's timbre effect X (0 unless genuine);
- `probe_c1`, `probe_c1e4`: singer-probe margin above chance (`audioscore.studies.probe.fit_probe`,
  logistic C = 1 and C = 1e4) on the part of the pooled vector the adversary sees (MuQ; plan B's
  CAM++ dims excluded); `probe_all_c1`: the whole pooled vector, timbre dims included;
  `probe_timbre_c1`: plan B's timbre dims alone.

`campp.kind=pretrained`: plan B's tiny CAM++ is first trained to identify other synthetic singers
(`audioscore.studies.campp_pretrain`), once per output folder, and every plan B cell loads that
file as a user loads a released checkpoint. `campp.kind=ge2e`: plan B's timbre encoder is the pretrained
GE2E voice encoder (`campp@<node>=ge2e`, `audioscore.models.components.ge2e`). `reuse_cells`
takes over plan A cells from an earlier run.

Writes `<out>/cells.csv` (one row per cell; finished cells are kept and skipped on a rerun),
`<out>/timbre.md` (mean +- std over seeds, losses against control and GRL recoveries) and
`<out>/timbre.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from scipy.stats import spearmanr

from audiobase.files import write_text
from audiobase.weights import find_user_error
from audioscore.calibrate import cross_fitted_mae
from audioscore.config import load_config
from audioscore.data.groups import read_groups
from audioscore.metrics.ranking import group_metrics
from audioscore.studies.campp_speaker import pretrain_campp
from audioscore.studies.probe import fit_probe, pooled_features, select_part
from audioscore.studies.timbre_report import plot, read_cells, write_cells, write_report
from audioscore.synth import make_corpus, read_clips_csv
from audioscore.synth.voices import Singer, timbre_axis
from audioscore.train import train

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
CAMPP_TARGET = "audioscore.models.components.campp.build_campp_encoder"
GE2E_TARGET = "audioscore.models.components.ge2e.Ge2eEncoder"
TIMBRE_TARGETS = (CAMPP_TARGET, GE2E_TARGET)
CAMPP_KINDS = ("random", "pretrained", "ge2e")
GRID_FILE = CONF_DIR / "timbre" / "timbre.yaml"


def load_grid(overrides: list[str] | None = None) -> DictConfig:
    """conf/timbre/timbre.yaml with dotted `key=value` overrides."""
    cfg = load_config(GRID_FILE, values=overrides or ())
    OmegaConf.set_struct(cfg, False)
    return cfg


def make_corpora(grid: DictConfig, out: Path) -> dict[str, dict[str, Path]]:
    """One corpus per regime under `out/corpora/<regime>` (kept when already complete)."""
    base = cast(dict, OmegaConf.to_container(grid.corpus, resolve=True))
    base["group_size"] = tuple(base["group_size"])
    base["formats"] = tuple(base["formats"])
    corpora = {}
    for name in grid.use_regimes:
        knobs = grid.regimes[name]
        root = out / "corpora" / str(name)
        want = {"effect": float(knobs.timbre_effect), "confound": float(knobs.timbre_confound)}
        if not same_corpus(root, base, want):
            t0 = time.monotonic()
            knob_args: dict[str, Any] = {f"timbre_{k}": v for k, v in want.items()}
            make_corpus(root, **base, **knob_args)
            write_text(root / "grid.json", json.dumps({**base, **want}, default=list) + "\n")
            log.info("corpus %s written in %.0f s", name, time.monotonic() - t0)
        corpora[str(name)] = {"root": root, "val": root / "val.json", "clips": root / "clips.csv"}
    return corpora


def same_corpus(root: Path, base: dict, knobs: dict) -> bool:
    """Whether `root` holds a complete corpus made with these settings."""
    stamp = root / "grid.json"
    if not (root / "train.json").is_file() or not stamp.is_file():
        return False
    return bool(json.loads(stamp.read_text()) == json.loads(json.dumps({**base, **knobs})))


def compose_cell(
    grid: DictConfig,
    corpus: Path,
    experiment: str,
    seed: int,
    run: Path,
    campp_file: Path | None = None,
    timbre: str | None = None,
) -> Any:
    """The training config of one cell: conf/train + the grid's overrides; `experiment` is a
    conf/train/experiment name or a `variants` label (an experiment + its own overrides).
    `campp_file`: every CAM++ of the model loads this weights file, through the overrides a user
    gives for a released checkpoint (`<node>.source=<file> <node>.tiny=false`).
    `timbre`: another config of the campp group (`ge2e`) for every CAM++ node
    (`campp@<node>=<timbre>`)."""
    own: list[str] = []
    variant = (grid.get("variants") or {}).get(experiment)
    if variant is not None:
        experiment, own = str(variant.experiment), [str(o) for o in variant.overrides]
    extra = list(grid.get("extra_overrides") or [])
    overrides = [f"experiment={experiment}", *grid.train_overrides, *extra, *own, f"seed={seed}"]
    overrides += [f"data.root={corpus}", f"paths.data_dir={corpus.parent}"]
    train = partial(load_config, "train", conf_dir=CONF_DIR / "train")
    cfg = train(overrides)
    if campp_file is not None and (nodes := campp_nodes(cfg)):
        for node in nodes:
            overrides += [f"{node}.source={Path(campp_file).resolve()}", f"{node}.tiny=false"]
        cfg = train(overrides)
    if timbre is not None and (nodes := campp_nodes(cfg)):
        overrides += [f"campp@{node}={timbre}" for node in nodes]
        cfg = train(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    return cfg


def campp_nodes(cfg: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the timbre encoder configs (CAM++, GE2E) in a composed training config."""
    if isinstance(cfg, DictConfig):
        if cfg.get("_target_") in TIMBRE_TARGETS:
            return [prefix]
        return [
            n
            for k, v in cfg.items_ex(resolve=False)
            for n in campp_nodes(v, f"{prefix}.{k!s}" if prefix else str(k))
        ]
    return []


def uses_campp(grid: DictConfig, experiment: str) -> bool:
    """Whether an experiment (or `variants` label) has a CAM++ branch (plan B)."""
    cfg = compose_cell(grid, Path("corpus"), experiment, 0, Path("run"))
    return bool(campp_nodes(cfg))


def campp_weights(grid: DictConfig, out: Path) -> Path | None:
    """Plan B's CAM++ weights file under `grid.campp.kind`: None (random: the tiny random CAM++
    of `debug=tiny`; ge2e: GE2E's packaged weights) or `<out>/campp_pretrained.bin`, trained once
    by `audioscore.studies.campp_speaker.pretrain_campp` and kept while its settings are
    unchanged. One output folder holds one kind: cells of several kinds would share their
    labels."""
    kind = str(grid.campp.kind)
    if kind not in CAMPP_KINDS:
        raise ValueError(f"{GRID_FILE}: campp.kind must be one of {CAMPP_KINDS}, got {kind!r}")
    settings = cast(dict, OmegaConf.to_container(grid.campp.pretrain, resolve=True))
    want: dict[str, Any] = {"kind": kind, "pretrain": settings if kind == "pretrained" else None}
    stamp = out / "campp.json"
    if stamp.is_file():
        have = json.loads(stamp.read_text())
        if have["kind"] != kind:
            raise ValueError(
                f"{stamp}: this folder holds campp.kind={have['kind']} cells; use another --out"
            )
    elif kind != "random" and read_cells(out / "cells.csv"):
        raise ValueError(
            f"{out}: holds cells of random CAM++ runs (no campp.json); use another --out"
        )
    else:
        have = {}
    if kind in ("random", "ge2e"):
        write_text(stamp, json.dumps(want) + "\n")
        return None
    path = out / "campp_pretrained.bin"
    if not path.is_file() or have.get("pretrain") != settings:
        if have.get("pretrain") not in (None, settings) and read_cells(out / "cells.csv"):
            raise ValueError(f"{stamp}: cells were trained with other pretraining settings")
        t0 = time.monotonic()
        fit = pretrain_campp(path, **settings)
        want["fit"] = {"loss": fit["loss"], "acc": fit["acc"], "seconds": time.monotonic() - t0}
        log.info("CAM++ pretrained: %s", want["fit"])
        write_text(stamp, json.dumps(want) + "\n")
    return path


def reuse_cells(grid: DictConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of `grid.reuse_cells` (a cells.csv) for grid cells without CAM++, which the campp
    choice does not change (plan A), when `rows` lacks them."""
    src = grid.get("reuse_cells")
    if not src:
        return rows
    done = {(r["regime"], r["experiment"], int(r["seed"])) for r in rows}
    plan_a = {str(e) for e in grid.experiments if not uses_campp(grid, str(e))}
    keep = {(str(r), str(e), int(s)) for r in grid.use_regimes for e in plan_a for s in grid.seeds}
    new = [
        r
        for r in read_cells(Path(src))
        if (k := (r["regime"], r["experiment"], int(r["seed"]))) in keep and k not in done
    ]
    return rows + new


def val_clips(corpus: dict[str, Path]) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Validation clips (with their group index), tau and the quality part of their score."""
    groups = read_groups(corpus["val"], require_sorted=False)
    items = [dict(it, group=g) for g, group in enumerate(groups) for it in group]
    meta = json.loads((corpus["root"] / "meta.json").read_text())
    tau = timbre_axis([Singer(**s) for s in meta["singers"]])
    effect = {r["audio_file"]: r.get("timbre_effect", 0.0) for r in read_clips_csv(corpus["clips"])}
    root = corpus["root"]
    quality = [it["score"] - effect[str(Path(it["audio_file"]).relative_to(root))] for it in items]
    return items, np.array([tau[it["singer"]] for it in items]), np.array(quality)


def timbre_weight(raw: np.ndarray, quality: np.ndarray, tau: np.ndarray) -> float:
    """Score points per unit tau the scorer adds beyond quality: c / b of raw ~ a + b q + c tau."""
    x = np.column_stack([np.ones_like(quality), quality, tau])
    coef = np.linalg.lstsq(x, raw, rcond=None)[0]
    return float(coef[2] / coef[1]) if abs(coef[1]) > 1e-12 else float("nan")


def evaluate_cell(model: Any, datamodule: Any, corpus: dict[str, Path], grid: DictConfig) -> dict:
    """Score the validation clips with the final weights; metrics and singer probes."""
    items, tau, quality = val_clips(corpus)
    net = model.net
    pooled, raw, ok, failures = pooled_features(
        net, datamodule.preprocess, [it["audio_file"] for it in items], batch_size=16
    )
    if failures:
        raise RuntimeError(f"{corpus['val']}: validation clips failed to load: {failures[:3]}")
    labels = np.array([it["score"] for it in items])
    groups = np.array([it["group"] for it in items])
    singers = [it["singer"] for it in items]
    res = {
        "val_srcc": group_metrics(raw, labels, groups)["srcc"],
        "val_srcc_pooled": float(spearmanr(raw, labels)[0]),
        "val_mae": cross_fitted_mae(raw, labels),
        "timbre_weight": timbre_weight(raw, quality, tau),
    }
    extra = int(net.head.extra_dim)
    folds, repeats = int(grid.probe.folds), int(grid.probe.repeats)
    audio = select_part(pooled, extra, "audio")
    for name, c in grid.probe.C.items():  # probe_c1, probe_c1e4
        res[f"probe_{name}"] = fit_probe(audio, singers, folds, 0, repeats, float(c))["margin"]
    for part in ("all", "timbre"):  # plan B: with its timbre dims, and those alone
        res[f"probe_{part}_c1"] = (
            fit_probe(select_part(pooled, extra, part), singers, folds, 0, repeats, 1.0)["margin"]
            if extra
            else float("nan")
        )
    return res


def run_cell(
    grid: DictConfig,
    corpus: dict[str, Path],
    regime: str,
    experiment: str,
    seed: int,
    run: Path,
    campp_file: Path | None = None,
    timbre: str | None = None,
) -> dict[str, Any]:
    cfg = compose_cell(grid, corpus["root"], experiment, seed, run, campp_file, timbre)
    t0 = time.monotonic()
    _, objects = train(cfg)
    train_s = time.monotonic() - t0
    res = evaluate_cell(objects["model"], objects["datamodule"], corpus, grid)
    return {"regime": regime, "experiment": experiment, "seed": seed, **res, "train_s": train_s}


def run_grid(grid: DictConfig, out: Path) -> dict[str, Any]:
    out = out.resolve()  # groups files hold absolute audio paths
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(grid.get("threads", 1)))
    corpora = make_corpora(grid, out)
    cells_file = out / "cells.csv"
    campp_file = campp_weights(grid, out)
    timbre = "ge2e" if str(grid.campp.kind) == "ge2e" else None
    rows = reuse_cells(grid, read_cells(cells_file))
    done = {(r["regime"], r["experiment"], int(r["seed"])) for r in rows}
    for seed in grid.seeds:
        for regime in grid.use_regimes:
            for exp in grid.experiments:
                key = (str(regime), str(exp), int(seed))
                if key in done:
                    continue
                run = out / "runs" / f"{regime}_{exp}_s{seed}"
                row = run_cell(grid, corpora[str(regime)], *key, run, campp_file, timbre)
                print(
                    f"{regime:9s} {exp:17s} seed {seed}: val SRCC {row['val_srcc']:.3f}, "
                    f"MAE {row['val_mae']:.2f}, timbre weight {row['timbre_weight']:+.1f}, "
                    f"probe {row['probe_c1']:+.3f} / {row['probe_c1e4']:+.3f} "
                    f"({row['train_s']:.0f} s)",
                    flush=True,
                )
                rows.append(row)
                write_cells(cells_file, rows)
    keep = {
        (str(r), str(e), int(s))
        for r in grid.use_regimes
        for e in grid.experiments
        for s in grid.seeds
    }
    rows = [r for r in rows if (r["regime"], r["experiment"], int(r["seed"])) in keep]
    return {"rows": rows, "table": write_report(rows, grid, out), "plot": plot(rows, grid, out)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="outputs/timbre")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of conf/timbre/timbre.yaml")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.monotonic()
    try:
        res = run_grid(load_grid(args.overrides), Path(args.out))
    except Exception as e:
        if (err := find_user_error(e)) is None:
            raise
        print(f"error: {err}", file=sys.stderr)  # e.g. campp.kind=ge2e without resemblyzer
        raise SystemExit(2) from None
    print(Path(res["table"]).read_text())
    print(f"plot: {res['plot']}  ({time.monotonic() - t0:.0f} s)")
    return res
