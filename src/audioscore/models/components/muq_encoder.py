"""The scorer's MuQ: `audiobase.muq.MuQTap` with LoRA adapters (peft) and optional fine-tuning.

The tap (loading, truncation, exact padded batches, the feature cache of a frozen encoder) is
shared with the reward models in `audiobase.muq`; what only training needs lives here: LoRA,
`train_backbone`, and the `Pretrained` protocol the exporter uses.
"""

from __future__ import annotations

from typing import Any

from peft import LoraConfig, inject_adapter_in_model

from audiobase.muq import DEFAULT_PRETRAINED, MuQTap, muq_config_dict

DEFAULT_LORA_TARGETS = ("linear_q", "linear_k", "linear_v", "linear_out")


class MuQEncoder(MuQTap):
    """Waveform [B, T] at 24 kHz -> MuQ hidden layer `layer` [B, F, D] at 25 Hz plus frame mask.

    Args:
        pretrained: hub id or local directory for `MuQ.from_pretrained`; None = random init from
            `muq_config` (a MuQConfig dict, or a preset name: "tiny" = `tiny_muq_config()`,
            "large" = `large_muq_config()`, MuQ-large's architecture).
        layer: hidden-state index (0 = conv stem, k = output of conformer layer k).
        truncate: drop conformer layers above `layer` (same output, less compute).
        lora: None (frozen backbone) or dict(r, alpha, dropout, target_modules).
        train_backbone: also fine-tune the base weights (default False: only LoRA trains).
        cache_dir: FeatureCache root for a frozen encoder (no LoRA, no backbone training); used
            when forward() gets `keys`. Ignored while anything in the encoder trains.
        weights_key: the config key that sets `pretrained`, named when the weights are missing.
    """

    def __init__(
        self,
        pretrained: str | None = DEFAULT_PRETRAINED,
        layer: int = 6,
        truncate: bool = True,
        lora: dict | None = None,
        muq_config: dict | str | None = None,
        seed: int = 0,
        train_backbone: bool = False,
        cache_dir: str | None = None,
        weights_key: str = "model.net.encoder.pretrained",
    ) -> None:
        super().__init__(pretrained, layer, truncate, muq_config, seed, cache_dir, weights_key)
        # what standalone_config() needs to rebuild this architecture without `pretrained`
        self.init_args = {
            "layer": layer,
            "truncate": truncate,
            "lora": None if lora is None else dict(lora),
            "seed": seed,
            "train_backbone": train_backbone,
            "cache_dir": cache_dir,
        }
        self.train_backbone = train_backbone
        self.has_lora = bool(lora)
        for p in self.muq.parameters():
            p.requires_grad_(train_backbone)
        if lora:
            self._inject_lora(**lora)
        self.muq.eval()

    def _inject_lora(
        self,
        r: int = 16,
        alpha: int = 32,
        dropout: float = 0.0,
        target_modules: list[str] | tuple[str, ...] = DEFAULT_LORA_TARGETS,
    ) -> None:
        cfg = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules)
        )
        try:
            inject_adapter_in_model(cfg, self.muq)
        except ValueError as e:  # peft's NoMatchingPeftModuleError
            raise ValueError(
                f"LoRA targets {list(target_modules)} match no module of MuQ up to layer "
                f"{self.layer}: {e}"
            ) from e
        for name, p in self.muq.named_parameters():
            if "lora_" in name:
                p.requires_grad_(self._layer_used(name))

    def _layer_used(self, name: str) -> bool:
        """LoRA above the tapped layer cannot change the output: keep it frozen (DDP-safe)."""
        marker = "conformer.layers."
        if marker not in name:
            return True
        idx = int(name.split(marker, 1)[1].split(".", 1)[0])
        return idx < self.layer

    def train(self, mode: bool = True) -> MuQEncoder:
        # the backbone stays in eval (MuQTap); only LoRA dropout trains
        super().train(mode)
        for name, m in self.muq.named_modules():
            if name.endswith("lora_dropout") or ".lora_dropout." in name:
                m.train(mode)
        return self

    # ---- Pretrained protocol (export) --------------------------------------------------------
    def base_state_keys(self) -> list[str]:
        """state_dict keys of frozen pretrained weights (not LoRA), relative to this module; none
        for a random init (nothing could rebuild it) or a fine-tuned backbone."""
        if self.pretrained is None or self.train_backbone:
            return []
        return [k for k in self.state_dict() if k.startswith("muq.") and "lora_" not in k]

    def standalone_config(self) -> dict[str, Any]:
        """This encoder rebuilt from its own MuQ config (no hub access); weights come later."""
        return {
            "_target_": f"{MuQEncoder.__module__}.MuQEncoder",
            "pretrained": None,
            "muq_config": muq_config_dict(self.muq),
            **self.init_args,
        }
