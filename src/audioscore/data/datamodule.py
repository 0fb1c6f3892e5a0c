"""GroupsDataModule: sampled sub-groups of ranked clips for training, whole groups for validation.

A training batch is `groups_per_batch` sub-lists (<= `max_group_size` items, order kept, best
first) drawn from one or more groups files (sources mixed by `source_weights`), each clip a random
random window of the contract's `max_dur` (shorter clips whole), prepared by the data's
`Preprocess` contract. Validation scores every item of the validation groups through the
same contract's own (centre) window, which the export stores for inference.

Each training sample is drawn from its own generator seeded by (seed, epoch, position in the
epoch), so the draws do not depend on worker processes or on what else consumed random numbers:
a run resumed from a checkpoint trains on the groups and crops an uninterrupted run would. The
epoch is the trainer's, read when an epoch's first batch is requested (`EpochLoader`), that is
after Lightning has restored it from the checkpoint; every batch carries it (`epoch`).

With `crop_grid_seconds` set, random crop starts are drawn from a fixed grid per clip instead of
anywhere, so a clip only ever yields a few distinct training crops and frozen encoders (CAM++,
frozen MuQ) serve them from the feature cache after the first epochs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from audiobase.audio import MUQ_MIN_SAMPLES, MUQ_SR, AudioError, audio_duration
from audiobase.cache import file_digest
from audiobase.plan import ScoringPlan, pad_waves
from audiobase.preprocess import Preprocess
from audioscore.data.groups import read_groups

log = logging.getLogger(__name__)

# 30 s windows at -12 LUFS, as the original recipe: random ones in training, the centre one in
# validation (and, through the export, at inference)
DEFAULT_PREPROCESS = Preprocess(
    sr=MUQ_SR, max_dur=30.0, crop="center", target_lufs=-12.0, min_samples=MUQ_MIN_SAMPLES
)


def grid_offset(spare: float, grid: float, rng: np.random.Generator) -> float:
    """A random crop start from the clip's grid: `spare` (seconds a crop can move) split into
    ceil(spare / grid) equal steps, so both ends are reachable and steps are <= `grid`."""
    steps = max(1, math.ceil(spare / grid - 1e-9))
    return spare * int(rng.integers(0, steps + 1)) / steps


class ClipLoader:
    """Loads one crop of a clip through the preprocessing contract; remembers durations and
    records failures (append + flush).

    `crop_grid_s`: None = random crop starts anywhere; a number of seconds = random starts on a
    fixed per-clip grid (see `grid_offset`), so crops repeat and cached features are reused.
    """

    def __init__(
        self,
        preprocess: Preprocess,
        failures_path: str | None = None,
        crop_grid_s: float | None = None,
    ) -> None:
        if crop_grid_s is not None and not crop_grid_s > 0:
            raise ValueError(f"data.crop_grid_seconds must be > 0 or null, got {crop_grid_s}")
        self.pre = preprocess
        self.failures_path = failures_path
        self.crop_grid_s = crop_grid_s
        self._durations: dict[str, float] = {}

    def duration(self, path: str) -> float:
        if path not in self._durations:
            self._durations[path] = audio_duration(path)
        return self._durations[path]

    def load(self, path: str, rng: np.random.Generator | None) -> dict:
        """rng=None -> the contract's own window (validation); else a random window of the same
        length (training). Returns wav [T], start (samples), key."""
        spare = self.duration(path) - self.pre.max_dur if self.pre.max_dur else 0.0
        if rng is None or spare <= 0:
            offset = self.pre.window(self.duration(path))
        elif self.crop_grid_s:
            offset = grid_offset(spare, self.crop_grid_s, rng)
        else:
            offset = float(rng.uniform(0.0, spare))
        wav = self.pre.load(path, offset=offset)
        start = int(round(offset * self.pre.sr))
        # cache key for frozen encoders: file content + crop + preprocessing
        key = f"{file_digest(path)}:{start}:{wav.shape[0]}:{self.pre.target_lufs}"
        return {"wav": wav, "start": start, "key": key}

    def record_failure(self, path: str, err: Exception) -> None:
        log.warning("skipping clip: %s", err)
        if self.failures_path:
            Path(self.failures_path).parent.mkdir(parents=True, exist_ok=True)
            with open(self.failures_path, "a") as f:
                f.write(json.dumps({"path": path, "error": str(err)}) + "\n")
                f.flush()


def shuffle_ties(items: list[dict], rng: np.random.Generator) -> list[dict]:
    """Randomly order items with equal scores (their given order carries no information)."""
    out: list[dict] = []
    i = 0
    while i < len(items):
        j = i + 1
        s = items[i].get("score")
        while s is not None and j < len(items) and items[j].get("score") == s:
            j += 1
        block = items[i:j]
        out.extend(block[k] for k in rng.permutation(len(block)))
        i = j
    return out


class EpochSampler(Sampler):
    """Yields (epoch, position) for each position of an epoch of `length` samples; `epoch()`
    is read when an epoch starts (the trainer's current epoch, restored on resume), which
    `EpochLoader` delays until the epoch's first batch is requested.

    Samplers run in the main process, so the epoch reaches the dataset in every worker, and
    DDP's sampler wrapper splits these pairs across ranks as it would plain indices.
    """

    def __init__(self, length: int, epoch: Callable[[], int]) -> None:
        self.length, self.epoch = length, epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = int(self.epoch())
        return iter([(epoch, i) for i in range(self.length)])

    def __len__(self) -> int:
        return self.length


class EpochLoader(DataLoader):
    """A DataLoader whose iterator starts (and reads its sampler) at the first batch requested.

    Lightning may create the training iterator before it restores the checkpoint's epoch (a
    scheduler's `trainer.estimated_stepping_batches` in `configure_optimizers` does), and a
    worker-backed iterator sends its first indices to the workers as soon as it exists, so a
    resumed run trained its first epoch on the draws of epoch 0. Deferred, the sampler reads the
    epoch when that epoch's batches are wanted.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # not a _BaseDataLoaderIter
        return DeferredIterator(super().__iter__, len(self))


class DeferredIterator(Iterator[Any]):
    """Calls `start()` (a DataLoader's own `__iter__`) at the first `next()`."""

    def __init__(self, start: Callable[[], Iterator[Any]], length: int) -> None:
        self.start, self.length = start, length
        self.it: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self.it is None:
            self.it = self.start()
        return next(self.it)

    def __len__(self) -> int:
        return self.length


class TrainGroups(Dataset):
    """(epoch, position) -> one sampled sub-group (list of loaded clips, best first), drawn with
    a generator seeded by (seed, epoch, position). Length = samples per epoch."""

    def __init__(
        self,
        sources: list[list[list[dict]]],
        weights: list[float],
        loader: ClipLoader,
        max_group_size: int,
        length: int,
        singer_ids: dict[str, int],
        seed: int = 0,
    ) -> None:
        self.sources, self.loader = sources, loader
        self.weights = np.asarray(weights, float) / np.sum(weights)
        self.max_group_size, self.length, self.singer_ids = max_group_size, length, singer_ids
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def sample_group(self, rng: np.random.Generator) -> list[dict]:
        groups = self.sources[rng.choice(len(self.sources), p=self.weights)]
        sizes = np.array([len(g) for g in groups], float)
        group = groups[rng.choice(len(groups), p=sizes / sizes.sum())]
        if len(group) > self.max_group_size:
            keep = np.sort(rng.choice(len(group), self.max_group_size, replace=False))
            group = [group[k] for k in keep]
        return shuffle_ties(group, rng)

    def __getitem__(self, index: tuple[int, int] | int) -> list[dict]:
        """index: (epoch, position) from `EpochSampler`; a plain position means epoch 0."""
        epoch, position = index if isinstance(index, tuple) else (0, index)
        # the position, which DDP's sampler splits across ranks, keeps ranks from drawing the
        # same groups; the epoch makes each epoch draw anew
        rng = np.random.default_rng([self.seed, int(epoch), int(position)])
        for _ in range(10):
            clips = []
            for item in self.sample_group(rng):
                try:
                    clip = self.loader.load(item["audio_file"], rng)
                except AudioError as e:
                    self.loader.record_failure(item["audio_file"], e)
                    continue
                clips.append({**make_record(item, clip, self.singer_ids), "epoch": int(epoch)})
            if len(clips) >= 2:
                return clips
        raise RuntimeError("10 sampled groups in a row had fewer than 2 readable clips")


class ValItems(Dataset):
    """Every item of the validation groups, centre-cropped; None for unreadable clips."""

    def __init__(self, groups: list[list[dict]], loader: ClipLoader, singer_ids: dict[str, int]):
        self.items = []
        for g, group in enumerate(groups):
            for pos, item in enumerate(group):
                s = item.get("score")
                truth = float(s) if s is not None else -float(pos)  # no scores: order is truth
                self.items.append((g, truth, item))
        self.loader, self.singer_ids = loader, singer_ids

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict | None:
        g, truth, item = self.items[index]
        try:
            clip = self.loader.load(item["audio_file"], None)
        except AudioError as e:
            self.loader.record_failure(item["audio_file"], e)
            return None
        rec = make_record(item, clip, self.singer_ids)
        rec.update(index=index, group=g, truth=truth)
        return rec


def make_record(item: dict, clip: dict, singer_ids: dict[str, int]) -> dict:
    s = item.get("score")
    return {
        **clip,
        "path": item["audio_file"],
        "score": float("nan") if s is None else float(s),
        "singer": singer_ids.get(str(item.get("singer")), -1) if item.get("singer") else -1,
    }


def pad_clips(records: list[dict]) -> dict[str, Any]:
    """Records -> wav [B, T] zero-padded, lengths [B], scores [B], singer [B], paths, starts, keys."""
    wav, lengths = pad_waves([r["wav"] for r in records])  # [B, T], [B]: as every route pads
    return {
        "wav": wav,
        "lengths": lengths,
        "scores": torch.tensor([r["score"] for r in records], dtype=torch.float32),
        "singer": torch.tensor([r["singer"] for r in records], dtype=torch.long),
        "paths": [r["path"] for r in records],
        "starts": torch.tensor([r["start"] for r in records], dtype=torch.long),
        "keys": [r["key"] for r in records],
    }


def collate_groups(groups: list[list[dict]]) -> dict[str, Any]:
    """Sub-groups -> flat clips + slots [G, N] (flat index per group position, -1 = padding)
    and `epoch`, the training epoch the groups were drawn for (-1 when not known)."""
    flat = [r for g in groups for r in g]
    batch = pad_clips(flat)
    n = max(len(g) for g in groups)
    slots = torch.full((len(groups), n), -1, dtype=torch.long)  # [G, N]
    i = 0
    for gi, g in enumerate(groups):
        slots[gi, : len(g)] = torch.arange(i, i + len(g))
        i += len(g)
    batch["slots"] = slots
    batch["epoch"] = int(flat[0].get("epoch", -1))
    return batch


def collate_items(records: list[dict | None]) -> dict[str, Any] | None:
    ok = [r for r in records if r is not None]
    if not ok:
        return None
    batch = pad_clips(ok)
    batch["index"] = torch.tensor([r["index"] for r in ok], dtype=torch.long)
    batch["group"] = torch.tensor([r["group"] for r in ok], dtype=torch.long)
    batch["truth"] = torch.tensor([r["truth"] for r in ok], dtype=torch.float32)
    return batch


def resolve_groups_file(root: str | None, path: str) -> str:
    """A groups file's path: `root/path` when that exists, else `path` as given (relative to
    the working directory); a file in neither place is reported at `root/path`."""
    if not root or os.path.isabs(path):
        return str(path)
    in_root = Path(root) / path
    return str(path) if not in_root.exists() and Path(path).exists() else str(in_root)


def data_name(data_cfg: Any) -> str:
    """The data's name for dashboards: `name` when set, else the folder of the first training
    groups file (`data/synth/train.json` -> `synth`)."""
    if data_cfg.get("name"):
        return str(data_cfg["name"])
    files = data_cfg.get("train_files") or []
    first = files[0] if not isinstance(files, str) else files
    path = Path(resolve_groups_file(data_cfg.get("root"), str(first))).resolve()
    return path.parent.name or path.stem


class GroupsDataModule(L.LightningDataModule):
    """Groups files -> ranked training sub-groups and validation items.

    Args:
        train_files / val_files: groups files; a relative one is looked up in `root` (when
            given) and then in the working directory, so a debug overlay's `root` never hides
            the user's own files. Audio paths inside a groups file resolve against that file's
            folder (or `audio_root`).
        source_weights: sampling weight per training file (default: its number of items).
        groups_per_batch: global number of sub-groups per step (divided across DDP ranks).
        steps_per_epoch: optimizer steps per epoch (groups are sampled, not enumerated).
        crop_grid_seconds: None = training crops start anywhere; a number = they start on a
            fixed per-clip grid with steps of at most this many seconds (cache-friendly).
        failures_path: JSONL where unreadable clips are recorded (training carries on).
        seed: seeds the training draws with the epoch and position (see `TrainGroups`); None =
            torch's initial seed, which `seed_everything(cfg.seed)` sets to the run's `seed`.
    """

    def __init__(
        self,
        train_files: list[str],
        val_files: list[str],
        root: str | None = None,
        audio_root: str | None = None,
        name: str | None = None,
        source_weights: list[float] | None = None,
        preprocess: Preprocess = DEFAULT_PREPROCESS,
        crop_grid_seconds: float | None = None,
        groups_per_batch: int = 4,
        max_group_size: int = 8,
        steps_per_epoch: int = 100,
        val_batch_size: int = 8,
        num_workers: int = 2,
        check_files: bool = True,
        failures_path: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["preprocess"])
        self.preprocess = preprocess
        # validation clips are scored as an export scores them (its calibration is fitted on them)
        self.plan = ScoringPlan(preprocess, batch_size=val_batch_size)
        self.train_groups: list[list[list[dict]]] = []
        self.val_groups: list[list[dict]] = []
        self.singer_ids: dict[str, int] = {}
        self.per_device_groups = groups_per_batch
        self.seed = seed

    def resolve(self, path: str) -> str:
        return resolve_groups_file(self.hparams["root"], path)

    def read(self, path: str) -> list[list[dict]]:
        return read_groups(
            self.resolve(path),
            root=self.hparams["audio_root"],
            check_files=self.hparams["check_files"],
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_groups:
            return
        hp: Any = self.hparams  # save_hyperparameters: the __init__ arguments
        # ranking needs pairs: single-item groups carry no order information
        self.train_groups = [[g for g in self.read(f) if len(g) >= 2] for f in hp.train_files]
        for f, groups in zip(hp.train_files, self.train_groups, strict=True):
            if not groups:
                raise ValueError(f"{self.resolve(f)}: no group with >= 2 clips to rank")
        self.val_groups = [g for f in hp.val_files for g in self.read(f)]
        all_groups = [g for gs in self.train_groups for g in gs] + self.val_groups
        singers = {str(it["singer"]) for g in all_groups for it in g if it.get("singer")}
        self.singer_ids = {s: i for i, s in enumerate(sorted(singers))}
        world = self.trainer.world_size if self.trainer is not None else 1
        if hp.groups_per_batch % world:
            raise ValueError(
                f"data.groups_per_batch={hp.groups_per_batch} must divide by {world} devices"
            )
        self.per_device_groups = hp.groups_per_batch // world
        # fixed once, here: torch's seed is reseeded during training (audioscore.train)
        self.seed = torch.initial_seed() if hp.seed is None else hp.seed

    def current_epoch(self) -> int:
        """The trainer's epoch (restored from the checkpoint on resume); 0 without a trainer."""
        return self.trainer.current_epoch if self.trainer is not None else 0

    @property
    def num_singers(self) -> int:
        return len(self.singer_ids)

    def score_stats(self) -> tuple[float, float]:
        """Mean and std of the training scores (for the regression objective)."""
        s = [
            it["score"]
            for gs in self.train_groups
            for g in gs
            for it in g
            if it["score"] is not None
        ]
        if len(s) < 2:
            raise ValueError("the training groups carry fewer than 2 scores")
        return float(np.mean(s)), float(np.std(s))

    def loader(self) -> ClipLoader:
        hp: Any = self.hparams  # save_hyperparameters: the __init__ arguments
        return ClipLoader(self.preprocess, hp.failures_path, hp.crop_grid_seconds)

    def train_dataloader(self) -> DataLoader:
        hp: Any = self.hparams  # save_hyperparameters: the __init__ arguments
        weights = hp.source_weights or [sum(len(g) for g in gs) for gs in self.train_groups]
        if len(weights) != len(self.train_groups):
            raise ValueError("data.source_weights needs one weight per training file")
        ds = TrainGroups(
            self.train_groups,
            weights,
            self.loader(),
            hp.max_group_size,
            hp.steps_per_epoch * hp.groups_per_batch,
            self.singer_ids,
            seed=torch.initial_seed() if self.seed is None else self.seed,
        )
        return EpochLoader(
            ds,
            batch_size=self.per_device_groups,
            sampler=EpochSampler(len(ds), self.current_epoch),  # samples are random draws
            num_workers=hp.num_workers,
            collate_fn=collate_groups,
            persistent_workers=hp.num_workers > 0,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        hp: Any = self.hparams  # save_hyperparameters: the __init__ arguments
        ds = ValItems(self.val_groups, self.loader(), self.singer_ids)
        return DataLoader(
            ds,
            batch_size=hp.val_batch_size,
            shuffle=False,
            num_workers=hp.num_workers,
            collate_fn=collate_items,
            persistent_workers=hp.num_workers > 0,
        )
