"""Scoring sharded over `trainer.devices=N` with Lightning's predict loop.

Each rank gets every N-th pre-formed batch (a DistributedSampler without padding, so no row is
scored twice), builds its own reward model, and appends to results.rank<r>.jsonl; the caller
merges the parts into results.jsonl (bench.store.compact) once `trainer.predict` returns.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DistributedSampler

from audiobase import schemas as S
from bench.data import BenchRow
from bench.infer import autocast_for, make_loader, model_preprocess, score_batch_rows
from bench.models import (
    decode_workers,
    extra_score_kwargs,
    model_grad,
    model_inputs,
    n_devices,
    pick_threads,
    prepare_model_cfg,
    to_dict,
)
from bench.store import ResultWriter, iter_records
from rewards.build import build_reward_model


class ShardSampler(DistributedSampler):
    """Indices rank, rank+N, ... in order; unlike DistributedSampler, no padding repeats."""

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]


class BenchDataModule(L.LightningDataModule):
    """Pre-formed duration batches, decoded by workers, sharded by rank."""

    def __init__(
        self,
        batches: list[list[BenchRow]],
        max_dur: float,
        num_workers: int,
        paths: bool = False,
        ahead_mb: float | None = None,
        nice: int = 0,
        max_seconds: float | None = None,
    ):
        super().__init__()
        self.max_seconds = max_seconds  # files longer than this are refused
        self.batches, self.max_dur, self.num_workers = batches, max_dur, num_workers
        self.paths = paths  # model.inputs=paths: nothing to decode
        self.ahead_mb, self.nice = ahead_mb, nice  # per rank: see bench.infer.make_loader

    def predict_dataloader(self):
        t = self.trainer
        # the model is built in the module's setup, on this rank
        pre = model_preprocess(t.lightning_module.reward_model, self.max_dur, self.max_seconds)
        sampler = ShardSampler(
            self.batches, num_replicas=t.world_size, rank=t.global_rank, shuffle=False
        )
        return make_loader(
            self.batches,
            None if self.paths else pre,
            self.num_workers,
            sampler=sampler,
            ahead_mb=self.ahead_mb,
            nice=self.nice,
        )


class BenchPredictModule(L.LightningModule):
    """Wraps a reward model for predict_step; writes its rank's part file per batch."""

    def __init__(
        self,
        model_cfg: dict[str, Any] | None,
        model: Any,
        score_kwargs: dict[str, Any],
        max_dur: float,
        out_dir: str,
        model_name: str,
        bf16: bool = True,
        threads: int | None = None,
        fp: str = "",
        per_side: bool = False,
        grad: bool = False,
    ):
        super().__init__()
        self.threads, self.fp, self.per_side, self.grad = threads, fp, per_side, grad
        self.model_cfg, self.score_kwargs = model_cfg, dict(score_kwargs or {})
        self.max_dur, self.out_dir, self.model_name, self.bf16 = max_dur, out_dir, model_name, bf16
        # a list keeps it out of nn.Module registration: the model owns its device
        self._rm = [model]
        # fewer batches than ranks (a resume retrying a few rows): idle ranks are fine
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.writer: ResultWriter | None = None

    @property
    def reward_model(self) -> Any:
        return self._rm[0]

    def setup(self, stage: str) -> None:
        if self._rm[0] is None:  # build per rank, on this rank's device
            cfg = OmegaConf.create(self.model_cfg)
            if "device" in cfg:
                cfg.device = str(self.trainer.strategy.root_device)
            self._rm[0], kw = build_reward_model(cfg)
            self.score_kwargs = {**(kw or {}), **self.score_kwargs}
        self.writer = ResultWriter(Path(self.out_dir) / f"results.rank{self.global_rank}.jsonl")
        if self.threads:
            torch.set_num_threads(self.threads)  # per rank: ranks share the machine's cores

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        return batch  # rows + waveforms stay on CPU; the reward model moves what it needs

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> int:
        # Lightning predicts under no_grad (inference_mode is off for grad=True, see the Trainer)
        with torch.enable_grad() if self.grad else contextlib.nullcontext():
            rows = self.score(batch)
        assert self.writer is not None, "setup() opens the writer"
        self.writer.write(rows)
        return len(rows)

    def score(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return score_batch_rows(
            self.reward_model,
            batch,
            model_preprocess(self.reward_model, self.max_dur).max_dur,
            self.score_kwargs,
            self.model_name,
            autocast=lambda: autocast_for(self.device, self.bf16),
            extra={S.FINGERPRINT: self.fp},
            per_side=self.per_side,
            grad=self.grad,
        )

    def on_predict_end(self) -> None:
        if self.writer is not None:
            self.writer.close()


def score_sharded(
    cfg: DictConfig,
    model: Any,
    score_kwargs: dict[str, Any] | None,
    batches: list[list[BenchRow]],
    out: Path,
    fp: str = "",
) -> dict[str, Any]:
    """Run predict over `cfg.trainer` devices; returns counts read back from the part files.
    `model=None`: each rank builds its own from `cfg.model` on its device."""
    model_cfg = to_dict(prepare_model_cfg(cfg))
    extra = extra_score_kwargs(cfg)
    module = BenchPredictModule(
        model_cfg if model is None else None,
        model,
        {**(score_kwargs or {}), **extra},
        float(cfg.max_dur),
        str(out),
        str(cfg.model.name),
        bool(cfg.get("bf16", True)),
        pick_threads(cfg, n_devices(cfg)),
        fp,
        cfg.get("batching") == "upstream",
        model_grad(cfg),
    )
    tcfg = to_dict(cfg.trainer)
    if tcfg.get("strategy", "auto") == "auto":  # fork on CPU: no re-import of the caller
        tcfg["strategy"] = "ddp_fork" if tcfg.get("accelerator") == "cpu" else "ddp"
    trainer = L.Trainer(
        **tcfg,
        logger=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,  # ShardSampler shards without padding
        enable_model_summary=False,
        inference_mode=not module.grad,  # model.grad=true: plain no_grad, lifted in predict_step
    )
    before = {p: sum(1 for _ in iter_records(p)) for p in out.glob("results.rank*.jsonl")}
    t0 = time.perf_counter()
    paths = model_inputs(cfg) == "paths"
    ahead = cfg.get("decode_ahead_mb")
    dm = BenchDataModule(
        batches,
        float(cfg.max_dur),
        decode_workers(cfg, n_devices(cfg)),
        paths,
        ahead_mb=ahead / n_devices(cfg) if ahead else None,  # the machine's budget, shared
        nice=int(cfg.get("decode_nice", 0) or 0),
        max_seconds=cfg.get("max_seconds"),
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    trainer.strategy.barrier()  # plain ddp: every rank's part file is complete past this point
    # spawned ranks keep their counters to themselves: recount from what they wrote
    stats: dict[str, Any] = {"ok": 0, "error": 0, "audio_seconds": 0.0, "scored_keys": []}
    stats["wall_s"] = time.perf_counter() - t0
    stats["is_global_zero"] = trainer.is_global_zero
    for p in sorted(out.glob("results.rank*.jsonl")):
        for j, rec in enumerate(iter_records(p)):
            if j < before.get(p, 0):
                continue
            stats[rec.get(S.STATUS, "error")] += 1
            stats["scored_keys"].append(rec[S.ROW_KEY])
            stats["audio_seconds"] += float(rec.get(S.AUDIO_SECONDS) or 0.0)
    return stats
