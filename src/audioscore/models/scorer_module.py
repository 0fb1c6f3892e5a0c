"""ScorerLitModule: ranking/regression loss, DANN singer adversary, validation ranking metrics."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from audioscore.metrics import group_metrics
from audioscore.models.components.grl import RidgeAdversary, SingerAdversary, dann_lambda
from audioscore.models.components.scorer import frozen_base_keys

# the MuQ backbone is kept in eval mode on purpose (BatchNorm, dropout, layerdrop)
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


def to_container(cfg: Any) -> Any:
    """DictConfig -> plain dict (checkpoints stay loadable with torch.load(weights_only=True))."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def build_net(net_cfg: dict) -> nn.Module:
    """Instantiate the net from its `_target_` config and remember that config for export."""
    net = instantiate(net_cfg, _convert_="all")
    net._net_config = net_cfg
    return net


def group_matrix(values: torch.Tensor, slots: torch.Tensor, fill: float) -> torch.Tensor:
    """Flat per-item values [B] -> padded group matrix [G, N] via slot indices (-1 = padding)."""
    out = values[slots.clamp(min=0)]  # [G, N]
    return out.masked_fill(slots < 0, fill)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.05):
    """Linear warm-up then cosine decay to 0, stepped every optimizer step."""
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ScorerLitModule(L.LightningModule):
    """Trains a `VocalScorer` on groups sorted high to low.

    Args:
        net: `_target_` config of the net (kept as config so export/reload can rebuild it).
        loss: `_target_` config of the objective (ListMLE, pairwise logistic, regression).
        optimizer: `_target_` + `_partial_` config of the optimizer.
        scheduler: None or dict(warmup_frac) for warm-up + cosine per step.
        adversary: None or dict(kind=ridge|mlp, mode=classify|regress, max_weight, gamma, weight;
            ridge: condition, bank, ridge; mlp: hidden_dim, dropout, norm, orthogonal, lr_scale,
            reset_every_epochs): a singer adversary behind a gradient reversal layer on the pooled
            vector (see `RidgeAdversary`, `SingerAdversary` and `adversary_input`).
        save_full_encoder: False drops pretrained MuQ base weights from checkpoints/exports.
    """

    def __init__(
        self,
        net: dict,
        loss: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        adversary: dict | None = None,
        save_full_encoder: bool = True,
    ) -> None:
        super().__init__()
        net, loss, optimizer = to_container(net), to_container(loss), to_container(optimizer)
        scheduler, adversary = to_container(scheduler), to_container(adversary)
        self.save_hyperparameters(logger=False)
        self.net = build_net(net)
        self.loss_fn = instantiate(loss)
        self.adv_cfg = dict(adversary) if adversary else None
        self.adversary: SingerAdversary | RidgeAdversary | None = None
        self.grl_lambda = 0.0
        self._val_outputs: list[dict[str, torch.Tensor]] = []
        # checkpoints may omit frozen pretrained weights; they are rebuilt from `pretrained`
        self.strict_loading = save_full_encoder

    # ---- setup -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(self.loss_fn, "fit_stats") and dm is not None and stage == "fit":
            mean, std = dm.score_stats()
            self.loss_fn.fit_stats(mean, std)
        if self.adv_cfg and self.adversary is None:
            self.build_adversary(num_singers=getattr(dm, "num_singers", 0))
            if stage == "fit" and dm is not None:
                check_scores_for_adversary(self.adversary, dm)

    @property
    def adversary_dim(self) -> int:
        """Width of what the adversary sees: `pooled` minus plan B's frozen CAM++ dims."""
        timbre = getattr(self.net, "timbre", None)
        return self.net.pooled_dim - (int(timbre.out_dim) if timbre is not None else 0)

    def adversary_input(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        # plan B appends the frozen CAM++ embedding last; it is a speaker embedding by design and
        # nothing upstream of it trains, so only the MuQ part can be made singer-blind
        x = out["pooled"].float()[:, : self.adversary_dim]  # [B, P - E]
        if (self.adv_cfg or {}).get("orthogonal", False):
            # drop the one direction the score reads (score = fc(pooled)): whatever else the
            # adversary finds there is not needed by the task, so reversing it cannot trade
            # quality away even when singer and quality are confounded in the training data
            w = self.net.head.fc.weight[0, : self.adversary_dim].detach().float()  # [P - E]
            x = x - (x @ w).unsqueeze(-1) * w / w.dot(w).clamp(min=1e-12)  # [B, P - E]
        return x

    def build_adversary(self, num_singers: int = 0) -> None:
        cfg = self.adv_cfg or {}
        mode = cfg.get("mode", "classify")
        if mode == "classify":
            if num_singers < 2:
                raise ValueError("GRL classify mode needs >= 2 singers (the `singer` field)")
            out_dim = num_singers
        elif mode == "regress":
            if self.net.timbre is None:
                raise ValueError("GRL regress mode needs a timbre module (speaker embedding)")
            out_dim = int(self.net.timbre.out_dim)
        else:
            raise ValueError(f"adversary.mode must be classify or regress, got {mode!r}")
        self.adversary = self.make_adversary(out_dim)

    def make_adversary(self, out_dim: int) -> SingerAdversary | RidgeAdversary:
        cfg = self.adv_cfg or {}
        kind = cfg.get("kind", "ridge")
        if kind == "ridge":
            return RidgeAdversary(
                self.adversary_dim,
                out_dim,
                bank=cfg.get("bank"),
                ridge=float(cfg.get("ridge", 0.1)),
                condition=bool(cfg.get("condition", True)),
            )
        if kind != "mlp":
            raise ValueError(f"adversary.kind must be mlp or ridge, got {kind!r}")
        return SingerAdversary(
            self.adversary_dim,
            out_dim,
            hidden_dim=cfg.get("hidden_dim", 256),
            dropout=cfg.get("dropout", 0.3),
            norm=bool(cfg.get("norm", False)),
        )

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()

    def on_train_epoch_start(self) -> None:
        # a fresh adversary cannot be fooled by a relabelling the encoder learned against the old
        # one: to keep it at chance the features must stop identifying singers
        every = int((self.adv_cfg or {}).get("reset_every_epochs", 0) or 0)
        if self.adversary is None or not every or self.current_epoch == 0:
            return
        if self.current_epoch % every == 0:
            for m in self.adversary.modules():
                if hasattr(m, "reset_parameters") and m is not self.adversary:
                    m.reset_parameters()
            for opt in self.trainer.optimizers:
                for p in self.adversary.parameters():
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
            loss = task + self.adv_cfg.get("weight", 1.0) * adv
            self.log("train/adv_loss", adv, prog_bar=True, batch_size=bs)
            self.log("train/grl_lambda", self.grl_lambda, batch_size=bs)
        self.log("train/task_loss", task, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.adversary is None:
            return
        total = max(1, int(self.trainer.estimated_stepping_batches))
        cfg = self.adv_cfg
        self.grl_lambda = dann_lambda(
            self.global_step / total, cfg.get("max_weight", 1.0), cfg.get("gamma", 10.0)
        )
        self.adversary.grl.lambd = self.grl_lambda

    def adversary_loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        classify = self.adv_cfg.get("mode", "classify") == "classify"
        if isinstance(self.adversary, RidgeAdversary):
            target = batch["singer"] if classify else out["timbre"].detach()
            return self.adversary(self.adversary_input(out), target, batch["scores"])
        pred = self.adversary(self.adversary_input(out))
        if classify:
            singer = batch["singer"]  # [B], -1 = unknown
            if not bool((singer >= 0).any()):
                return pred.sum() * 0.0  # keeps the graph (DDP) without a signal
            return nn.functional.cross_entropy(pred, singer, ignore_index=-1)
        target = out["timbre"].detach().float()  # [B, E] speaker embedding
        return nn.functional.mse_loss(pred, target)

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is None:  # every clip of this batch was unreadable (recorded by the loader)
            return
        out = self(batch)
        rec = {
            "index": batch["index"],
            "score": out["score"].detach().float(),
            "truth": batch["truth"],
            "group": batch["group"],
        }
        if self.adversary is not None and self.adv_cfg.get("mode", "classify") == "classify":
            logits = self.adversary.predict(self.adversary_input(out))
            rec["adv_hit"] = (logits.argmax(-1) == batch["singer"]).float()
            rec["adv_known"] = (batch["singer"] >= 0).float()
        self._val_outputs.append(rec)

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        cat = {k: torch.cat([o[k] for o in self._val_outputs]) for k in self._val_outputs[0]}
        self._val_outputs.clear()
        if self.trainer.world_size > 1:
            cat = self.gather_ranks(cat)
        idx = cat["index"].cpu().numpy()
        _, first = np.unique(idx, return_index=True)  # DistributedSampler pads by repeating
        first = first[idx[first] >= 0]
        pick = {k: v.cpu().numpy()[first] for k, v in cat.items()}
        m = group_metrics(pick["score"], pick["truth"], pick["group"])
        for key in ("srcc", "ktau", "pair_acc"):
            # NaN (e.g. constant predictions) would break best-checkpoint selection
            value = 0.0 if np.isnan(m[key]) else m[key]
            self.log(f"val/{key}", float(value), prog_bar=key == "srcc", sync_dist=False)
        if not self.trainer.sanity_checking and hasattr(self, "_t0"):
            # wall time since fit started (this process): time-to-quality comparisons
            self.log("time/train_s", time.monotonic() - self._t0)
        if "adv_hit" in pick and pick["adv_known"].sum() > 0:
            acc = float((pick["adv_hit"] * pick["adv_known"]).sum() / pick["adv_known"].sum())
            self.log("val/adv_acc", acc)

    def gather_ranks(self, cat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """all_gather needs equal sizes: pad (index -1) up to the longest rank (skipped clips)."""
        n = torch.tensor([len(cat["index"])], device=self.device)
        longest = int(self.all_gather(n).max())
        out = {}
        for k, v in cat.items():
            pad = torch.full((longest - len(v),), -1, dtype=v.dtype, device=v.device)
            out[k] = self.all_gather(torch.cat([v, pad])).reshape(-1)
        return out

    # ---- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt_cfg = {k: v for k, v in self.hparams.optimizer.items() if k != "_partial_"}
        adv = {id(p) for p in self.adversary.parameters()} if self.adversary is not None else set()
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in adv]
        groups = [{"params": params}]
        if adv:
            # the adversary restarts its job whenever the encoder moves: a faster learner keeps
            # the reversed gradient informative within a short schedule
            scale = float(self.adv_cfg.get("lr_scale", 1.0))
            adv_params = [p for p in self.adversary.parameters() if p.requires_grad]
            groups.append({"params": adv_params, "lr": opt_cfg["lr"] * scale})
        opt = instantiate({**opt_cfg, "_partial_": True})(groups)  # param groups stay plain
        sched_cfg = self.hparams.scheduler
        if not sched_cfg:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine(opt, total, sched_cfg.get("warmup_frac", 0.05))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.hparams.save_full_encoder:
            return
        drop = set(frozen_base_keys(self.net, prefix="net."))
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k not in drop
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the adversary's size depends on the data; build it before weights are restored
        if self.adv_cfg and self.adversary is None:
            weights = [k for k in checkpoint["state_dict"] if k.startswith("adversary.mlp.")]
            if weights:
                last = max((k for k in weights if k.endswith(".weight")), key=mlp_index)
                self.adversary = self.make_adversary(int(checkpoint["state_dict"][last].shape[0]))


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


def mlp_index(key: str) -> int:
    """adversary.mlp.<i>.weight -> i (the last layer gives the adversary's output width)."""
    return int(key.split(".")[2])
