"""Third-party messages a normal training run does not need, silenced at their source, each
with the reason; everything else (our logs, real warnings) stays."""

from __future__ import annotations

import logging
import warnings
from typing import Any

# Lightning 2.6 calls torch's deprecated `LeafSpec` check on every batch under torch 2.11:
# nothing in this project can act on it
LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
# frozen encoders (MuQ base, CAM++) stay in eval mode on purpose while LoRA and the head train
EVAL_MODE = r"Found \d+ module\(s\) in eval mode at the start of training"
# an advertisement Lightning logs at every fit
TIP = "💡 Tip:"


class DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP)


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    warnings.filterwarnings("ignore", message=LEAFSPEC)
    warnings.filterwarnings("ignore", message=EVAL_MODE)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropTip) for f in logger.filters):
            logger.addFilter(DropTip())


def drop_wandb_anonymous(logger: Any) -> None:
    """Lightning's WandbLogger passes wandb's removed `anonymous` setting (as None), and wandb
    warns that it has no effect on every run: leave it out of the init arguments."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
