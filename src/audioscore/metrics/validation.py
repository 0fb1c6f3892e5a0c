"""Validation predictions gathered over DDP ranks, scored per group."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from audioscore.metrics.ranking import group_metrics

FIELDS = ("index", "score", "truth", "group", "adv_hit", "adv_known")


class GroupRanking(Metric):
    """Per-clip predictions of a validation epoch -> srcc / ktau / pair_acc (+ adv_acc).

    States are concatenated across ranks; DistributedSampler pads the last batches by repeating
    clips, so each dataset index counts once. `adv_acc` is the adversary's singer accuracy over
    clips with a known singer (absent when no clip had one).
    """

    full_state_update = False
    index: list[torch.Tensor]
    score: list[torch.Tensor]
    truth: list[torch.Tensor]
    group: list[torch.Tensor]
    adv_hit: list[torch.Tensor]
    adv_known: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        for name in FIELDS:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        index: torch.Tensor,
        score: torch.Tensor,
        truth: torch.Tensor,
        group: torch.Tensor,
        adv_hit: torch.Tensor | None = None,
        adv_known: torch.Tensor | None = None,
    ) -> None:
        """All [B]; adv_hit / adv_known: 1.0 where the adversary named / could name the singer."""
        zeros = torch.zeros_like(score, dtype=torch.float32)
        self.index.append(index.long())
        self.score.append(score.float())
        self.truth.append(truth.float())
        self.group.append(group.long())
        self.adv_hit.append(zeros if adv_hit is None else adv_hit.float())
        self.adv_known.append(zeros if adv_known is None else adv_known.float())

    def compute(self) -> dict[str, float]:
        if isinstance(self.index, list) and not self.index:
            return {}
        cat = {name: dim_zero_cat(getattr(self, name)).cpu().numpy() for name in FIELDS}
        idx = cat["index"]
        _, first = np.unique(idx, return_index=True)  # one row per clip
        first = first[idx[first] >= 0]
        pick = {k: v[first] for k, v in cat.items()}
        m = group_metrics(pick["score"], pick["truth"], pick["group"])
        out = {key: float(m[key]) for key in ("srcc", "ktau", "pair_acc")}
        known = pick["adv_known"].sum()
        if known > 0:
            out["adv_acc"] = float((pick["adv_hit"] * pick["adv_known"]).sum() / known)
        return out
