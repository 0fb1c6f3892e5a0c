"""A callback the multi-node test adds through the config (`+callbacks.rank_weights._target_=...`):
each rank writes what it trained, since only global rank 0 writes checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from safetensors.torch import save_file


class SaveRankWeights(L.Callback):
    """Writes `<out>/rank<R>_start.safetensors` and `rank<R>_end.safetensors` (the module's
    state at fit start and end) and `rank<R>.json` (the rank's place in the world)."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().cpu().clone().contiguous() for k, v in pl_module.state_dict().items()
        }
        save_file(state, str(self.out / f"rank{trainer.global_rank}_{when}.safetensors"))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module, "start")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module, "end")
        place = {
            "global_rank": trainer.global_rank,
            "node_rank": trainer.node_rank,
            "local_rank": trainer.local_rank,
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "global_step": trainer.global_step,
            "cluster_environment": type(trainer.strategy.cluster_environment).__name__,
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(place))
