"""ScorerLitModule: ranking/regression loss, DANN singer adversary, validation ranking metrics
and the calibrated MAE on the label scale."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from audioscore.calibrate import cross_fitted_mae
from audioscore.losses import ScoreRegressionLoss
from audioscore.metrics import GroupRanking
from audioscore.models.components.grl import Adversary, RidgeAdversary
from audioscore.models.components.scorer import VocalScorer, frozen_base_keys

# the MuQ backbone is kept in eval mode on purpose (BatchNorm, dropout, layerdrop)
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


class LabelledScores(Metric):
    """Raw validation scores with their labelled `score` (NaN when a clip has none), gathered
    over DDP ranks; each dataset index counts once (DistributedSampler repeats clips)."""

    full_state_update = False
    index: list[torch.Tensor]
    score: list[torch.Tensor]
    label: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        for name in ("index", "score", "label"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, score: torch.Tensor, label: torch.Tensor) -> None:
        """All [B]."""
        self.index.append(index.long())
        self.score.append(score.float())
        self.label.append(label.float())

    def compute(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw scores [N], labels [N]) of the clips seen, one row per clip."""
        if isinstance(self.index, list) and not self.index:
            return np.zeros(0), np.zeros(0)
        idx, score, label = (
            dim_zero_cat(getattr(self, n)).cpu().numpy() for n in ("index", "score", "label")
        )
        _, first = np.unique(idx, return_index=True)
        return score[first].astype(np.float64), label[first].astype(np.float64)


def group_matrix(values: torch.Tensor, slots: torch.Tensor, fill: float) -> torch.Tensor:
    """Flat per-item values [B] -> padded group matrix [G, N] via slot indices (-1 = padding)."""
    out = values[slots.clamp(min=0)]  # [G, N]
    return out.masked_fill(slots < 0, fill)


class ScorerLitModule(L.LightningModule):
    """Trains a `VocalScorer` on groups sorted high to low.

    Args:
        net: the built scorer net.
        loss: the built objective (ListMLE, pairwise logistic, regression).
        optimizer: optimizer partial, called with the parameter groups.
        scheduler: None or a partial taking (optimizer, num_warmup_steps, num_training_steps),
            stepped every optimizer step (e.g. transformers' `get_cosine_schedule_with_warmup`).
        warmup_frac: share of the training steps spent warming up (needed with a scheduler).
        adversary: None or an `Adversary` partial taking (in_dim, num_singers, timbre_dim): a
            singer adversary behind a gradient reversal layer, built in `setup` from the data.
        save_full_encoder: False drops pretrained base weights from checkpoints.
    """

    def __init__(
        self,
        net: VocalScorer,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        warmup_frac: float | None = None,
        adversary: Callable[..., Adversary] | None = None,
        save_full_encoder: bool = True,
    ) -> None:
        super().__init__()
        if scheduler is not None and warmup_frac is None:
            raise ValueError("a scheduler needs model.warmup_frac (share of steps warming up)")
        # built objects stay out of the checkpoint's hyperparameters: it must load with
        # torch.load(weights_only=True)
        self.save_hyperparameters(
            logger=False, ignore=["net", "loss", "optimizer", "scheduler", "adversary"]
        )
        self.net = net
        self.loss_fn = loss
        self.make_optimizer, self.make_scheduler = optimizer, scheduler
        self.make_adversary = adversary
        self.adversary: Adversary | None = None
        self.grl_lambda = 0.0
        self._t0: float | None = None  # when fit started (time/train_s)
        self.val_ranking = GroupRanking()
        self.val_labelled = LabelledScores()
        # checkpoints may omit frozen pretrained weights; they are rebuilt from `pretrained`
        self.strict_loading = save_full_encoder

    # ---- setup -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm: Any = self.trainer.datamodule  # type: ignore[attr-defined]
        if isinstance(self.loss_fn, ScoreRegressionLoss) and stage == "fit":
            self.loss_fn.fit_stats(*dm.score_stats())
        if self.make_adversary is not None and self.adversary is None:
            self.build_adversary(num_singers=dm.num_singers)
            if stage == "fit":
                check_scores_for_adversary(self.adversary, dm)

    @property
    def adversary_sees_timbre(self) -> bool:
        """`model.adversary.timbre`: whether the adversary also sees plan B's clip-timbre dims."""
        if self.adversary is not None:
            return self.adversary.sees_timbre
        return bool((getattr(self.make_adversary, "keywords", None) or {}).get("timbre", False))

    @property
    def adversary_dim(self) -> int:
        """Width of what the adversary sees: `pooled` minus plan B's clip timbre dims, unless
        `model.adversary.timbre` (then all of it)."""
        if self.adversary_sees_timbre:
            return self.net.head.pooled_dim
        return self.net.head.pooled_dim - self.net.head.extra_dim

    def build_adversary(self, num_singers: int = 0) -> None:
        """The adversary partial with the sizes the net and the data give."""
        assert self.make_adversary is not None, "no adversary configured"
        timbre = self.net.timbre
        if self.adversary_sees_timbre and timbre is not None:
            trained = any(p.requires_grad for p in timbre.parameters())  # type: ignore[attr-defined]
            if not trained:
                raise ValueError(
                    "model.adversary.timbre=true: the clip-timbre dims come from a frozen "
                    f"{type(timbre).__name__}, which a reversed gradient cannot change; give it a "
                    "trainable projection (model=hybrid_campp_proj, experiment="
                    "hybrid_campp_proj_grl) or set model.adversary.timbre=false"
                )
        self.adversary = self.make_adversary(
            in_dim=self.adversary_dim, num_singers=num_singers, timbre_dim=self.net.head.extra_dim
        )

    def adversary_input(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        # plan B appends the CAM++ embedding last; frozen, it is a speaker embedding by design and
        # nothing upstream of it trains, so by default only the MuQ part is made singer-blind
        # (`model.adversary.timbre=true` includes a trained projection of it)
        x = out["pooled"].float()[:, : self.adversary_dim]  # [B, P - E] (or [B, P])
        if self.adversary is not None and self.adversary.orthogonal:
            # drop the one direction the score reads (score = fc(pooled)): whatever else the
            # adversary finds there is not needed by the task, so reversing it cannot trade
            # quality away even when singer and quality are confounded in the training data
            w = self.net.head.fc.weight[0, : self.adversary_dim].detach().float()  # [P - E]
            x = x - (x @ w).unsqueeze(-1) * w / w.dot(w).clamp(min=1e-12)  # [B, P - E]
        return x

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()

    def on_train_epoch_start(self) -> None:
        adv = self.adversary
        if adv is None or not adv.reset_every_epochs or self.current_epoch == 0:
            return
        if self.current_epoch % adv.reset_every_epochs == 0:
            adv.reset_parameters()
            for opt in self.trainer.optimizers:
                for p in adv.parameters():
                    opt.state.pop(p, None)

    # ---- steps ---------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.net(batch["wav"], batch["lengths"], keys=batch.get("keys"))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self(batch)
        slots = batch["slots"]  # [G, N]
        scores = group_matrix(out["score"], slots, 0.0)  # [G, N]
        targets = group_matrix(batch["scores"], slots, float("nan"))  # [G, N]
        task = self.loss_fn(scores, slots >= 0, targets)
        loss = task
        bs = int(batch["wav"].shape[0])
        if self.adversary is not None:
            adv = self.adversary_loss(out, batch)
            loss = task + self.adversary.weight * adv
            self.log("train/adv_loss", adv, prog_bar=True, batch_size=bs)
            self.log("train/grl_lambda", self.grl_lambda, batch_size=bs)
        self.log("train/task_loss", task, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        drawn = batch.get("epoch", -1) if isinstance(batch, dict) else -1
        if drawn >= 0 and drawn != self.current_epoch:
            raise RuntimeError(
                f"a training batch drawn for epoch {drawn} reached epoch {self.current_epoch}: "
                "the data loader read its epoch before the trainer restored it"
            )
        if self.adversary is None:
            return
        total = max(1, int(self.trainer.estimated_stepping_batches))
        self.grl_lambda = self.adversary.schedule(self.global_step / total)

    def adversary_loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        adv = self.adversary
        assert adv is not None
        target = batch["singer"] if adv.mode == "classify" else out["timbre"].detach()  # [B]/[B, E]
        return adv.loss(self.adversary_input(out), target, batch.get("scores"))

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:  # every clip of this batch was unreadable (recorded by the loader)
            return
        out = self(batch)
        hit = known = None
        if self.adversary is not None and self.adversary.mode == "classify":
            logits = self.adversary.predict(self.adversary_input(out))  # [B, C]
            hit = logits.argmax(-1) == batch["singer"]
            known = batch["singer"] >= 0
        self.val_ranking.update(
            batch["index"], out["score"].detach(), batch["truth"], batch["group"], hit, known
        )
        self.val_labelled.update(batch["index"], out["score"].detach(), batch["scores"])

    def on_validation_epoch_end(self) -> None:
        m = self.val_ranking.compute()  # gathered over ranks
        self.val_ranking.reset()
        if not m:
            return
        for key in ("srcc", "ktau", "pair_acc"):
            # NaN (e.g. constant predictions) would break best-checkpoint selection
            value = 0.0 if np.isnan(m[key]) else m[key]
            self.log(f"val/{key}", value, prog_bar=key == "srcc")
        if not self.trainer.sanity_checking and self._t0 is not None:
            # wall time since fit started (this process): time-to-quality comparisons
            self.log("time/train_s", time.monotonic() - self._t0)
        if "adv_acc" in m:
            self.log("val/adv_acc", m["adv_acc"])
        raw, labels = self.val_labelled.compute()
        self.val_labelled.reset()
        # label-scale error of the calibrated scores, cross-fitted: each clip is calibrated by
        # a fit on the other validation folds (a fit on all clips would be in-sample, optimistic)
        mae = cross_fitted_mae(raw, labels)
        if not np.isnan(mae):
            self.log("val/mae", mae)

    # ---- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        adversary = self.adversary
        adv = list(adversary.parameters()) if adversary is not None else []
        adv_ids = {id(p) for p in adv}
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in adv_ids]
        groups = [{"params": params}]
        if adversary is not None and adv:
            groups.append({"params": [p for p in adv if p.requires_grad]})
        opt = self.make_optimizer(params=groups)
        if adversary is not None and adv:
            opt.param_groups[1]["lr"] *= adversary.lr_scale
        if self.make_scheduler is None:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = self.make_scheduler(
            optimizer=opt,
            num_warmup_steps=max(1, int(total * self.hparams["warmup_frac"])),
            num_training_steps=total,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.hparams["save_full_encoder"]:
            return
        drop = set(frozen_base_keys(self.net, prefix="net."))
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k not in drop
        }


def check_scores_for_adversary(adversary: nn.Module | None, dm: Any) -> None:
    """A score-conditioned ridge adversary leaves out clips without a score: on order-only groups
    it would silently do nothing, so say so before training starts."""
    if not (isinstance(adversary, RidgeAdversary) and adversary.condition):
        return
    try:
        dm.score_stats()
    except ValueError as e:
        raise ValueError(
            f"model.adversary.condition=true conditions the singer adversary on each clip's score, "
            f"but {e}; set model.adversary.condition=false for groups that only give an order"
        ) from e
