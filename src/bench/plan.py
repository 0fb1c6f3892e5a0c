"""A benchmark run's settings, checked once, and the reads every stage shares.

`RunPlan.from_cfg(cfg)` refuses a bad stage, subset or output name before anything is read;
`read_dataset` reads the dataset file once (bench.data.read_selection) for the whole run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bench.data import Selection, parse_subset, read_selection
from bench.guard import RunRefused, check_slug
from bench.store import RESULTS, part_files

log = logging.getLogger("bench.run")

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


@dataclass(frozen=True)
class RunPlan:
    """One run's settings, checked once (`from_cfg`: a bad stage, subset or name is refused
    before anything is read): the config, the output folder, the stage and the subsets."""

    cfg: DictConfig
    out: Path
    stage: str
    subsets: list[str] | None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> RunPlan:
        return cls(cfg, output_dir(cfg), run_stage(cfg), subsets(cfg))

    @property
    def split(self) -> str | None:
        return self.cfg.dataset.get("split", "test")

    @property
    def metrics(self) -> dict[str, Any]:
        """bench.evaluate's settings: split, bootstrap, seed, plots, the report's names."""
        cfg = self.cfg
        return {
            "split": self.split,
            "n_boot": int(cfg.get("n_boot", 1000)),
            "seed": int(cfg.get("seed", 0)),
            "plots": bool(cfg.get("plots", True)),
            "title": f"{cfg.model.name} on {cfg.dataset.name}",
            "variant": str(cfg.model.name),
        }

    def prepare_output(self) -> None:
        """Create the run's folder; unless `resume`, earlier scores in it are forgotten. Call
        it with the folder's lock held."""
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.cfg.get("resume", True) and self.stage != "evaluate":
            for p in [self.out / RESULTS, *part_files(self.out)]:
                p.unlink(missing_ok=True)

    def read_dataset(self) -> Selection:
        """The dataset file, read once: every benchmark row and the selection. An empty
        selection is refused (`RunRefused`): it is a wrong split, subset or slice, not a
        result."""
        cfg, ds = self.cfg, self.cfg.dataset
        data = read_selection(
            ds.jsonl,
            ds.root,
            split=self.split,
            subsets=self.subsets,
            start_idx=int(cfg.get("start_idx") or 0),
            end_idx=cfg.get("end_idx"),
        )
        counts = data.counts
        if not data.rows:
            raise RunRefused(
                f"{ds.jsonl}: no rows selected: {counts['lines']} lines, "
                f"{counts['dropped_split']} dropped by split={self.split!r}, "
                f"{counts['dropped_source']} with a source outside the benchmark, "
                f"{counts['dropped_subsets']} outside subset={cfg.get('subset', 'all')}, "
                f"{counts['dropped_slice']} outside start_idx={cfg.get('start_idx')} "
                f"end_idx={cfg.get('end_idx')}"
            )
        return data

    def log_selection(self, data: Selection) -> None:
        """Log what was selected and what each filter dropped."""
        counts = data.counts
        dropped = {
            k.removeprefix("dropped_"): n for k, n in counts.items() if k.startswith("dropped")
        }
        log.info(
            "%s: %d of %d lines selected; dropped by %s",
            self.cfg.dataset.jsonl,
            counts["selected"],
            counts["lines"],
            ", ".join(f"{k}: {n}" for k, n in dropped.items()),
        )

    def outcome(
        self, rows: list[dict[str, Any]], scored_keys: list[str], run_info: dict[str, Any]
    ) -> dict[str, Any]:
        """run()'s info: the run entry plus where the outputs are and how many rows failed."""
        n_fail = sum(r.get("status") == "error" for r in rows)
        info = run_info | {
            "out_dir": str(self.out),
            "results": str(self.out / RESULTS),
            "failed_rows": n_fail,
            "total_rows": len(rows),
            "failed_frac": n_fail / max(len(rows), 1),
            "scored_keys": scored_keys,
        }
        info["too_many_failures"] = info["failed_frac"] > float(self.cfg.get("max_fail_frac", 1.0))
        return info
